package engine

import "regexp"

// An error a builtin returns often wraps a client error, and client errors
// name where they went: `Get "https://10.96.0.1:443/api/v1/namespaces/shop/
// services/web": dial tcp 10.96.0.1:443: connect: connection refused`. A
// policy whose failurePolicy is Fail turns that error into the denial the
// API server shows the user who sent the request, who has no business
// learning the API server's internal address or the paths Celadon reads.
// So the error's text is redacted in the decision's message, and kept
// whole in PolicyResult.Reason, which the server logs.

var (
	// A URL: a scheme, "://", and everything up to a space or a quote,
	// but for the punctuation that ends a sentence or precedes the error
	// it failed with ("...: EOF").
	urlPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]*[^\s"'<>:.,;)]`)
	// An IPv4 address, or a bracketed IPv6 one (with a colon, unlike a
	// field's index: "validations[0]"), with an optional port: what a dial
	// error names.
	addrPattern = regexp.MustCompile(`\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9A-Fa-f.%]*:[0-9A-Fa-f:.%]*\](?::\d+)?`)
)

// RedactAddresses replaces the URLs and IP addresses (with their ports) in
// the text of an error with "<redacted>", for messages that leave the
// server. It is meant for errors, never for what a policy says on purpose
// (a violation message may well name an address).
func RedactAddresses(s string) string {
	s = urlPattern.ReplaceAllString(s, "<redacted>")
	return addrPattern.ReplaceAllString(s, "<redacted>")
}
