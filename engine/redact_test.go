package engine

import "testing"

func TestRedactAddresses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`reading services web: Get "https://10.96.0.1:443/api/v1/namespaces/shop/services/web": dial tcp 10.96.0.1:443: connect: connection refused`,
			`reading services web: Get "<redacted>": dial tcp <redacted>: connect: connection refused`},
		{`Get "https://kubernetes.default.svc/api/v1/namespaces/x?timeout=5s": context deadline exceeded`,
			`Get "<redacted>": context deadline exceeded`},
		{`dial tcp [fd00:10:96::1]:443: i/o timeout`, `dial tcp <redacted>: i/o timeout`},
		{`post http://consul.consul:8500/v1/agent/service/deregister/x: EOF`, `post <redacted>: EOF`},
		// Nothing to redact: left as it is.
		{`service "web" has no port 8080`, `service "web" has no port 8080`},
		{`version 1.2.3 is too old`, `version 1.2.3 is too old`},
		{`with.validations[0].expression: no such key: a`, `with.validations[0].expression: no such key: a`},
	} {
		if got := RedactAddresses(c.in); got != c.want {
			t.Errorf("RedactAddresses(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
	}
}
