vcl 4.1;

# objmapper as Varnish's second-level store: answer from objmapper when it has the
# object, fetch from the origin when it does not (or when its daemon is down), and tee
# what the origin sends into objmapper. Load with vmod_path pointing at
# libvmod_objmapper.so (scripts/build-vmod prints where it is).

import std;
import objmapper;

backend origin {
    .host = "127.0.0.1";
    .port = "8080";
}

sub vcl_init {
    # Several varnishd on one host may share one objmapper daemon (and so one store):
    # use the same socket and prefix in each. The socket must be reachable by the
    # varnishd worker's user (vcache on Debian), and allowed by objmapper's allowlist:
    # e.g. objmapper serve --socket-mode 660 --socket-group varnish
    # --allow-uid "$(id -u vcache)=read,write".
    new store = objmapper.backend(socket = "/run/objmapper/objmapper.sock", prefix = "varnish:");
}

sub vcl_backend_fetch {
    # First attempt: objmapper, unless its daemon does not answer a PING (checked at
    # most once a second). Retries go to the origin.
    if (bereq.retries == 0 && std.healthy(store.backend())) {
        set bereq.backend = store.backend();
    } else {
        set bereq.backend = origin;
    }
}

sub vcl_backend_response {
    # objmapper had no live object (miss) or could not answer (error): ask the origin.
    if (beresp.http.X-Objmapper == "miss" || beresp.http.X-Objmapper == "error") {
        return (retry);
    }
    # From the origin: store it in objmapper while Varnish receives it, with beresp.ttl
    # as its lifetime there. The filter is named like the object ("store").
    if (!beresp.http.X-Objmapper && beresp.status == 200 && beresp.ttl > 0s) {
        set beresp.filters = beresp.filters + " store";
    }
}
