vcl 4.1;

# objmapper as Varnish's persistent, shared second-level store (Varnish 7.1 and 7.7).
#
# A fetch goes to objmapper first, for what Varnish would cache; a miss, a daemon that
# is sick, down or stuck, and pass traffic go to the origin; what the origin sends is
# written into objmapper while Varnish receives it. PURGE and BAN reach objmapper too,
# so an invalidation is not undone by the next miss, on this varnishd or on any other
# sharing the store. Load with vmod_path pointing at the libvmod_objmapper.so built
# for your Varnish (scripts/build-vmod prints where it is).

import std;
import objmapper;

backend origin {
    .host = "127.0.0.1";
    .port = "8080";
}

# Who may PURGE and BAN.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_init {
    # Several varnishd on one host may share one objmapper daemon (and so one store):
    # use the same socket and prefix in each. The socket must be reachable by the
    # varnishd worker's user (vcache on Debian) and allowed by objmapper's allowlist:
    #   objmapper serve --socket-mode 660 --socket-group varnish \
    #     --allow-uid "$(id -u vcache)=read,write"
    # timeout bounds each request to objmapper (default 0.25s); a request that times
    # out marks it sick, and fetches skip it until a probe (every probe_interval)
    # gets an answer.
    new store = objmapper.backend(
        socket = "/run/objmapper/objmapper.sock",
        prefix = "varnish:",
        timeout = 0.25s,
        probe_interval = 1s,
        tag_header = "xkey");
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        # Varnish purges its copies, then vcl_purge tells objmapper.
        return (purge);
    }
    if (req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        # objmapper first: if it cannot be told, say so, and Varnish keeps its copies
        # (a ban in Varnish alone would be undone by the next miss).
        if (req.http.X-Ban-Tag) {
            if (!store.ban_tag(req.http.X-Ban-Tag)) {
                return (synth(503, "objmapper ban failed"));
            }
            ban("obj.http.xkey ~ (^|[ ,])" + req.http.X-Ban-Tag + "($|[ ,])");
        } else if (req.http.X-Ban-Url) {
            if (!store.ban_url(req.http.X-Ban-Url)) {
                return (synth(503, "objmapper ban failed"));
            }
            ban("req.url ~ " + req.http.X-Ban-Url);
        } else {
            return (synth(400, "BAN needs X-Ban-Url (a regex) or X-Ban-Tag"));
        }
        return (synth(200, "Banned"));
    }
}

sub vcl_purge {
    if (!store.purge()) {
        return (synth(503, "objmapper purge failed"));
    }
}

sub vcl_backend_fetch {
    # objmapper answers only what Varnish would cache: never a pass (requests with
    # Authorization or Cookie, hit-for-pass), never a method other than GET or HEAD.
    # The director refuses those too. Retries go to the origin.
    if (bereq.retries == 0 && !bereq.uncacheable &&
        (bereq.method == "GET" || bereq.method == "HEAD") &&
        std.healthy(store.backend())) {
        set bereq.backend = store.backend();
    } else {
        set bereq.backend = origin;
    }
}

sub vcl_backend_response {
    if (beresp.backend == store.backend()) {
        if (beresp.http.X-Objmapper == "hit" || beresp.http.X-Objmapper == "stale") {
            # The TTL, grace and keep the object had when it was stored, counted
            # from when the origin produced it.
            store.restore();
            return (deliver);
        }
        # A miss, or objmapper could not answer: ask the origin.
        return (retry);
    }
    # From the origin. The store filter (named like the object) writes the response
    # into objmapper while Varnish receives it, unless Varnish will not cache it
    # (uncacheable, Set-Cookie, private, no-store, Vary: *). It runs after this
    # subroutine and the built-in one, so it sees their verdict on TTL, grace, keep.
    unset beresp.http.X-Objmapper;
    set beresp.filters = beresp.filters + " store";
}
