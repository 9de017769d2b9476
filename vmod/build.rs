//! Turns vmod.vcc into the C-ABI boilerplate Varnish loads (vmodtool-rs.py from the
//! `varnish` crate, which imports Debian's /usr/share/varnish/vmodtool.py).
fn main() {
    varnish::generate_boilerplate().expect("generating the VMOD boilerplate from vmod.vcc");
}
