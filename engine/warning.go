package engine

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// warningText returns w as a warning the API server passes on to the
// requester. The API server drops, without a word, a webhook's warning that
// is not valid UTF-8 or holds a control character
// (k8s.io/apimachinery/pkg/util/net.NewWarningHeader): the newline a YAML
// block scalar (`message: |`) ends with is enough for kubectl to show
// nothing. So each run of control characters becomes one space, each
// invalid byte U+FFFD, and the ends are trimmed; a warning without either
// is returned as it is.
func warningText(w string) string {
	if utf8.ValidString(w) && strings.IndexFunc(w, unicode.IsControl) < 0 {
		return w
	}
	var b strings.Builder
	b.Grow(len(w))
	space := false
	for _, r := range w { // an invalid byte ranges as utf8.RuneError, U+FFFD
		if unicode.IsControl(r) {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}
