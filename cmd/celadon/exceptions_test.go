package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// teamExceptions are a team's exceptions directory, as mounted under an
// exceptions directory's subdirectory "default", at 2026-03-01.
var teamExceptions = map[string]string{
	"exceptions/default/legacy.yaml": `apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata:
  name: legacy-web
spec:
  policies: [no-latest, no-latst]
  match:
    namespaces: [default]
    names: [web]
  reason: the legacy web image has no other tag yet
  owner: team-web
  expires: 2026-03-04T00:00:00Z
---
apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata:
  name: old
spec:
  policies: [no-latest]
  match: {namespaces: [default], names: [old-*]}
  reason: gone
  owner: team-web
  expires: 2026-02-01T00:00:00Z
`,
	"exceptions/default/later.yaml": `apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata:
  name: later
spec:
  policies: [no-latest]
  match: {namespaces: [default], names: [api]}
  reason: r
  owner: team-api
  expires: 2026-04-30T00:00:00Z
`,
}

const now0 = "2026-03-01T00:00:00Z"

func TestValidateExceptions(t *testing.T) {
	files := map[string]string{"policies/p.yaml": denyLatestPolicy + "---\n" + `apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata:
  name: everything
spec:
  policies: ['sts-*']
  match: {}
  reason: r
  owner: platform
`}
	for k, v := range teamExceptions {
		files[k] = v
	}
	dir := writeFiles(t, files)
	code, stdout, stderr := runCLI(t, "validate", "-p", dir+"/policies", "-e", dir+"/exceptions", "--now", now0)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	leg, pol := dir+"/exceptions/default/legacy.yaml", dir+"/policies/p.yaml"
	want := []string{
		pol + `:19:14: exception "everything": warning: policies[0]: the glob "sts-*" matches no policy: the exception does nothing for it`,
		pol + `:20:3: exception "everything": warning: the exception matches every request: its policies are off everywhere; delete them instead, or narrow spec.match`,
		leg + `:6:25: exception "legacy-web": warning: policies[1]: no policy is named "no-latst": the exception does nothing for it`,
		leg + `:12:3: exception "legacy-web": warning: expires in 3 days (2026-03-04T00:00:00Z): then its policies apply again; renew it or fix what it excepts (owner team-web)`,
		leg + `:23:3: exception "old": warning: expired on 2026-02-01T00:00:00Z: it applies no more; delete it (owner team-web)`,
	}
	if got := strings.Split(strings.TrimSpace(stderr), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
	if !strings.Contains(stdout, "ok: 1 policy (0 mutating, 1 validating), 1 exception, hash ") || !strings.Contains(stdout, "ok: 3 exceptions in "+dir+"/exceptions, hash ") {
		t.Errorf("stdout:\n%s", stdout)
	}
	// What expires within 60 days; none.
	_, _, stderr = runCLI(t, "validate", "-p", dir+"/policies", "-e", dir+"/exceptions", "--now", now0, "--expiring-within", "1440h")
	if !strings.Contains(stderr, `exception "later": warning: expires in 60 days (2026-04-30T00:00:00Z)`) {
		t.Errorf("--expiring-within 1440h:\n%s", stderr)
	}
	_, _, stderr = runCLI(t, "validate", "-p", dir+"/policies", "-e", dir+"/exceptions", "--now", now0, "--expiring-within", "0")
	if strings.Contains(stderr, "expires in") {
		t.Errorf("--expiring-within 0:\n%s", stderr)
	}
	// Two months later, "later" is too far ahead no more, and the rest expired.
	_, _, stderr = runCLI(t, "validate", "-p", dir+"/policies", "-e", dir+"/exceptions", "--now", "2026-04-29T00:00:00Z")
	if !strings.Contains(stderr, `exception "legacy-web": warning: expired on`) || !strings.Contains(stderr, `exception "later": warning: expires in 1 day`) {
		t.Errorf("two months later:\n%s", stderr)
	}
}

func TestValidateBrokenExceptions(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"p.yaml": denyLatestPolicy,
		"exceptions/team-a/x.yaml": `apiVersion: celadon.io/v1alpha1
kind: PolicyException
metadata:
  name: everyone
spec:
  policies: ["*"]
  match:
    namespaces: [team-a, kube-system]
  reason: r
  owner: team-a
  expires: 2099-01-01T00:00:00Z
`,
	})
	code, stdout, stderr := runCLI(t, "validate", "-p", dir+"/p.yaml", "-e", dir+"/exceptions", "--now", now0)
	x := dir + "/exceptions/team-a/x.yaml"
	want := x + `:6:14: exception "everyone": policies[0]: "*" is a glob: an exception of the exceptions directory names its policies one by one, so that it never excepts a policy added later
 |   policies: ["*"]
 | .............^
` + x + `:8:26: exception "everyone": match.namespaces[1]: namespace "kube-system": the exceptions of ` + dir + `/exceptions/team-a/ match in namespace "team-a" only, which the directory is named after
 |     namespaces: [team-a, kube-system]
 | .........................^
` + x + `:11:3: exception "everyone": expires: 2099-01-01T00:00:00Z is more than 90 days after now (2026-03-01T00:00:00Z), the limit of the exceptions directory: renew the exception nearer the time instead
 |   expires: 2099-01-01T00:00:00Z
 | ..^
`
	if code != 2 || stdout != "" || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "3 errors in exceptions") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s\nwant first:\n%s", code, stdout, stderr, want)
	}
	// A larger limit, as the server's --exceptions-max-lifetime may be.
	code, _, stderr = runCLI(t, "validate", "-p", dir+"/p.yaml", "-e", dir+"/exceptions", "--now", now0, "--exceptions-max-lifetime", "876000h")
	if code != 2 || strings.Contains(stderr, "expires:") {
		t.Errorf("exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "validate", "-p", dir+"/p.yaml", "--now", "tomorrow"); code != 2 || !strings.Contains(stderr, `--now "tomorrow": want an RFC 3339 timestamp`) {
		t.Errorf("exit %d\n%s", code, stderr)
	}
}

func TestEvalExceptions(t *testing.T) {
	files := map[string]string{"p.yaml": denyLatestPolicy, "pod.yaml": latestPodYAML}
	for k, v := range teamExceptions {
		files[k] = v
	}
	dir := writeFiles(t, files)
	args := []string{"eval", "-p", dir + "/p.yaml", "-f", dir + "/pod.yaml", "-e", dir + "/exceptions"}

	code, stdout, stderr := runCLI(t, append(args, "--now", now0)...)
	if code != 0 || !strings.Contains(stdout, `no-latest  deny  skip  excepted by exception "legacy-web" (owner team-web): the legacy web image has no other tag yet`) ||
		!strings.Contains(stdout, "warnings:\n  Celadon exception \"legacy-web\" (owner team-web) expires in 3 days (2026-03-04T00:00:00Z): policy no-latest applies again then\n") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, append(args, "--now", now0, "-o", "results")...)
	var res struct {
		Results []struct{ Policy, State, Exception string }
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 0 || len(res.Results) != 1 || res.Results[0].Exception != "legacy-web" || res.Results[0].State != "skip" {
		t.Errorf("exit %d, %v: %+v\n%s", code, err, res, stdout)
	}
	// At its expiry the policy applies again.
	code, stdout, _ = runCLI(t, append(args, "--now", "2026-03-04T00:00:00Z")...)
	if code != 1 || !strings.Contains(stdout, "DENIED: no latest images") {
		t.Errorf("at the expiry: exit %d\n%s", code, stdout)
	}
}

func TestTestExceptions(t *testing.T) {
	files := map[string]string{
		"p.yaml": denyLatestPolicy,
		"suite.yaml": `apiVersion: celadon.io/v1alpha1
kind: PolicyTest
policies: [p.yaml]
now: 2026-03-02T00:00:00Z
resources:
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: default}
  spec: {containers: [{name: app, image: "nginx:latest"}]}
tests:
- name: excepted
  object: {kind: Pod, name: web}
  expect:
    allowed: true
    results: [{policy: no-latest, result: skip, message: legacy-web}]
    warnings: ["expires in 2 days"]
`,
	}
	for k, v := range teamExceptions {
		files[k] = v
	}
	dir := writeFiles(t, files)
	code, stdout, stderr := runFreshCLI(t, "test", dir+"/suite.yaml", "-e", dir+"/exceptions")
	if code != 0 || !strings.Contains(stdout, "1 passed, 0 failed") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Without the exceptions, the case fails: the policy denies.
	code, stdout, _ = runFreshCLI(t, "test", dir+"/suite.yaml")
	if code != 1 || !strings.Contains(stdout, "policy no-latest: got fail, want skip") {
		t.Errorf("exit %d\nstdout:\n%s", code, stdout)
	}
}
