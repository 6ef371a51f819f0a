package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	kjson "sigs.k8s.io/json"
)

// decodeJSON parses a JSON document into plain values, as a builtin that
// asks for the object gets them: map[string]any, []any, string, int64
// (integers that fit), float64, bool and nil — what sigs.k8s.io/json's
// UnmarshalCaseSensitivePreserveInts produces.
func decodeJSON(data []byte) (any, error) {
	d, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	return d.native(0), nil
}

// reference decodes with the library our decoder stands in for.
func reference(data []byte) (any, error) {
	var v any
	err := kjson.UnmarshalCaseSensitivePreserveInts(data, &v)
	return v, err
}

func checkSameAsReference(t *testing.T, data []byte) {
	t.Helper()
	want, wantErr := reference(data)
	got, err := decodeJSON(data)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, reference error %v", data, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %#v\nwant %#v", data, got, want)
	}
}

var jsonCases = []string{
	`{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `1`, `-12`, `3.5`, `1e3`, `1E-3`, `-2.5e+10`,
	`9223372036854775807`, `-9223372036854775808`, `9223372036854775808`, `123456789012345678901234567890`,
	`999999999999999999`, `1.0`, `"a"`, `"\u00e9\n\t\"\\\/"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ud83dx"`,
	`"\ud83d\u0041"`, "\"caf\xc3\xa9\"", "\"bad\xffutf8\"", "\"\xe2\x82\"",
	` { "a" : [ 1 , 2 , { "b" : null } ] , "c" : "d" } `, `{"a":1,"a":2}`,
	`{"metadata":{"name":"x","labels":{"k":"v"}},"spec":{"containers":[{"name":"app","image":"nginx"}]}}`,
	// invalid
	``, ` `, `{`, `[`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `01`, `1.`, `.5`, `-`, `1e`, `+1`,
	`"abc`, "\"a\x01b\"", `"\x"`, `"\u12"`, `tru`, `nul`, `{} {}`, `{"a":1}x`, `1e400`, `[1e999]`,
	`{1:2}`, `"\uZZZZ"`,
}

func TestDecodeJSONMatchesReference(t *testing.T) {
	for _, c := range jsonCases {
		checkSameAsReference(t, []byte(c))
	}
	pod, err := os.ReadFile("testdata/pod.json")
	must(t, err)
	checkSameAsReference(t, pod)
	deep := strings.Repeat("[", maxJSONDepth+5) + strings.Repeat("]", maxJSONDepth+5)
	if _, err := decodeJSON([]byte(deep)); err == nil {
		t.Error("nesting beyond the limit should fail")
	}
}

// FuzzDecodeJSON checks the decoder against sigs.k8s.io/json on arbitrary
// input: the same values, and an error exactly when the reference errs.
func FuzzDecodeJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	if pod, err := os.ReadFile("testdata/pod.json"); err == nil {
		f.Add(pod)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if strings.Count(string(data), "[")+strings.Count(string(data), "{") > 5000 {
			return // the reference's depth limit differs from ours
		}
		checkSameAsReference(t, data)
		if d, err := parseJSON(data); err == nil && !d.dupKeys {
			checkValueMatchesPlain(t, d)
		}
	})
}

// BenchmarkDecodePod compares the parser with the library it replaces on a
// 4 KB pod: "parse" is what every request pays, "decode" adds the maps the
// engine builds for a read after a patch. Compare them in one run, the
// machines are noisy. The pod is compacted, as the API server sends it.
func BenchmarkDecodePod(b *testing.B) {
	indented, err := os.ReadFile("testdata/pod.json")
	if err != nil {
		b.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, indented); err != nil {
		b.Fatal(err)
	}
	pod := compact.Bytes()
	b.Run("celadon-parse", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := parseJSON(pod); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("celadon-decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := decodeJSON(pod); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sigs.k8s.io-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := reference(pod); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestHasStringSpecial checks the eight-byte test against plainByte for
// every byte value at every position of a word of plain text.
func TestHasStringSpecial(t *testing.T) {
	for pos := 0; pos < 8; pos++ {
		for c := 0; c < 256; c++ {
			word := []byte("abcdefgh")
			word[pos] = byte(c)
			x := uint64(0)
			for i := 7; i >= 0; i-- {
				x = x<<8 | uint64(word[i])
			}
			if got, want := hasStringSpecial(x), !plainByte[c]; got != want {
				t.Errorf("byte %#x at %d: hasStringSpecial %v, want %v", c, pos, got, want)
			}
		}
	}
}

// TestDenseDocumentsAreRefused: a document with far more values than bytes
// warrant is refused before its tape outgrows three times its size, and
// an ordinary one of the same size is not.
func TestDenseDocumentsAreRefused(t *testing.T) {
	dense := []byte("[" + strings.Repeat("0,", 1<<20) + "0]")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := parseJSON(dense)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooDense) {
		t.Fatalf("a list of 1M zeros: %v, want ErrTooDense", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 12*uint64(len(dense)) {
		t.Errorf("refusing %d bytes allocated %d", len(dense), got)
	}
	if _, err := ParseReview(append(append([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"a":`), dense...), "}}}"...)); !errors.Is(err, ErrReviewSlowPath) {
		t.Errorf("a dense review: %v, want the slow path", err)
	}
	sparse := []byte("[" + strings.Repeat(`"abcdefgh",`, 1<<17) + `"x"]`)
	if _, err := parseJSON(sparse); err != nil {
		t.Errorf("%d strings of 8 bytes: %v", 1<<17, err)
	}
	pod := []byte(`{"spec":{"containers":[` + strings.Repeat(`{"name":"a","ports":[{"containerPort":80}]},`, 20000) + `{"name":"b"}]}}`)
	if _, err := parseJSON(pod); err != nil {
		t.Errorf("a pod of 20,001 containers: %v", err)
	}
}
