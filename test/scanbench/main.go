// Command scanbench measures `celadon scan` against a synthetic cluster in
// a real kube-apiserver: its wall time and peak RSS at growing object
// counts, to show that memory does not grow with the cluster.
//
//	go run ./test/scanbench -celadon bin/celadon                       # 1,000, 10,000 and 50,000 ConfigMaps
//	go run ./test/scanbench -celadon bin/celadon -sizes 1000,5000 -namespaces 10
//
// It starts etcd and kube-apiserver from bin/ (internal/controlplane),
// creates -namespaces namespaces, half of them labelled env=prod, then,
// size after size, creates ConfigMaps up to that many (concurrently, the
// client unthrottled; the table says how long that took) and runs the
// celadon binary as a subprocess:
//
//	celadon scan -p POLICIES --kubeconfig KUBECONFIG -o json
//
// with the default --chunk-size and --qps, then once more with each of
// -variants' extra flags. Its wall time and peak RSS (the child's
// rusage maxrss, i.e. VmHWM) are reported per run, with the largest live
// heap after a GC (GODEBUG=gctrace=1: what the scan keeps, without the
// garbage of the pages it has read) and what the JSON summary counted,
// which must be the objects created. 1% of the ConfigMaps violate a Deny
// policy and 5% a Warn one with a namespaceSelector; the third policy
// finds nothing wrong (its condition is false: skip).
//
// Not part of `make test`: `make bench` runs it (hack/bench.sh).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"celadon.io/celadon/internal/controlplane"
)

// policies are the scanned policies.
var policies = map[string]string{
	"debug.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: no-debug}
spec:
  match:
    resources: [configmaps]
    objectSelector: {matchLabels: {debug: "true"}}
  action: deny
  with: {messageExpression: "'configmap ' + object.metadata.name + ' is a debug leftover'"}
`,
	"owner.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: prod-owner}
spec:
  match:
    resources: [configmaps]
    operations: [CREATE, UPDATE]
    namespaceSelector: {matchLabels: {env: prod}}
    conditions:
    - name: no-owner
      expression: "!('owner' in object.metadata.?annotations.orValue({}))"
  action: deny
  with: {message: production ConfigMaps name their owner}
  enforcement: Warn
`,
	"size.yaml": `apiVersion: celadon.io/v1alpha1
kind: Policy
metadata: {name: small-data}
spec:
  match:
    resources: [configmaps]
    conditions:
    - name: big
      expression: "object.?data.orValue({}).exists(k, size(object.data[k]) > 1024)"
  action: deny
  with: {message: values are at most 1 KiB}
  enforcement: Audit
`,
}

type options struct {
	celadon     string
	sizes       []int
	namespaces  int
	concurrency int
	variants    []string
	keep        bool
}

func main() {
	var o options
	var sizes, variants string
	flag.StringVar(&o.celadon, "celadon", "bin/celadon", "the celadon binary to run")
	flag.StringVar(&sizes, "sizes", "1000,10000,50000", "ConfigMap counts to scan at, in increasing order (objects are added between sizes)")
	flag.IntVar(&o.namespaces, "namespaces", 50, "namespaces the ConfigMaps are spread across")
	flag.IntVar(&o.concurrency, "concurrency", 32, "concurrent creates")
	flag.StringVar(&variants, "variants", "--qps 1000; --show-pass", "extra runs at each size: flag sets separated by ';', each added to the default run's")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (control-plane log, scan outputs)")
	flag.Parse()
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || len(o.sizes) > 0 && n < o.sizes[len(o.sizes)-1] {
			fatalf("-sizes: %q: want increasing counts", sizes)
		}
		o.sizes = append(o.sizes, n)
	}
	for _, v := range strings.Split(variants, ";") {
		if v = strings.TrimSpace(v); v != "" {
			o.variants = append(o.variants, v)
		}
	}
	if err := run(o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scanbench: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scanbench: "+format+"\n", args...)
}

// row is one scan run.
type row struct {
	objects                      int
	create                       time.Duration
	createRate                   float64
	flags                        string
	wall                         time.Duration
	maxRSSKiB                    int64
	maxLiveMB, gcs               int
	cpu                          time.Duration
	scanned, listed, listRequest int
	denied                       int
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	dir, err := os.MkdirTemp("", "celadon-scanbench-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("keeping %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	polDir := filepath.Join(dir, "policies")
	if err := os.MkdirAll(polDir, 0o755); err != nil {
		return err
	}
	for name, p := range policies {
		if err := os.WriteFile(filepath.Join(polDir, name), []byte(p), 0o644); err != nil {
			return err
		}
	}
	cpLog, err := os.Create(filepath.Join(dir, "controlplane.log"))
	if err != nil {
		return err
	}
	defer cpLog.Close()
	logf("starting etcd and kube-apiserver (log: %s)", cpLog.Name())
	cp, err := controlplane.Start(ctx, controlplane.Options{Out: cpLog})
	if err != nil {
		return err
	}
	defer cp.Stop()
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0 // unthrottled: the API server is the limit
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for i := range o.namespaces {
		labels := map[string]string{"env": "dev"}
		if i%2 == 0 {
			labels["env"] = "prod"
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Labels: labels}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return err
		}
	}

	var rows []row
	created := 0
	for _, size := range o.sizes {
		logf("creating ConfigMaps %d to %d (%d concurrent creates)", created, size, o.concurrency)
		start := time.Now()
		if err := createConfigMaps(ctx, cs, created, size, o.namespaces, o.concurrency); err != nil {
			return err
		}
		took := time.Since(start)
		n := size - created
		created = size
		logf("created %d in %v (%.0f/s)", n, took.Round(time.Millisecond), float64(n)/took.Seconds())
		for _, v := range append([]string{""}, o.variants...) {
			r, err := scan(ctx, o.celadon, polDir, cp.KubeconfigPath, strings.Fields(v), filepath.Join(dir, fmt.Sprintf("scan-%d-%d.out", size, len(rows))))
			if err != nil {
				return err
			}
			r.objects, r.create, r.createRate, r.flags = size, took, float64(n)/took.Seconds(), v
			if r.scanned < size {
				return fmt.Errorf("the scan counted %d objects, fewer than the %d ConfigMaps", r.scanned, size)
			}
			logf("scan %s: %v, max RSS %d KiB", v, r.wall.Round(time.Millisecond), r.maxRSSKiB)
			rows = append(rows, r)
		}
	}

	fmt.Printf("scan of ConfigMaps across %d namespaces; %d cores; %s\n", o.namespaces, runtime.NumCPU(), cpuModel())
	fmt.Printf("command: %s scan -p POLICIES --kubeconfig KUBECONFIG -o json [flags] (defaults: --chunk-size 500 --qps 20)\n\n", o.celadon)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ConfigMaps\tcreated in\tcreates/s\tflags\tscan wall\tscan CPU\tpeak RSS MiB\tlive heap MB\tGCs\tobjects scanned\tLIST requests\tobjects listed\tdenied\t")
	for _, r := range rows {
		flags := r.flags
		if flags == "" {
			flags = "(defaults)"
		}
		fmt.Fprintf(tw, "%d\t%v\t%.0f\t%s\t%v\t%v\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.objects, r.create.Round(100*time.Millisecond), r.createRate, flags,
			r.wall.Round(10*time.Millisecond), r.cpu.Round(10*time.Millisecond), float64(r.maxRSSKiB)/1024, r.maxLiveMB, r.gcs, r.scanned, r.listRequest, r.listed, r.denied)
	}
	return tw.Flush()
}

func nsName(i int) string { return fmt.Sprintf("scan-%02d", i) }

// createConfigMaps creates ConfigMaps from..to-1, spread over the
// namespaces: 1% labelled debug=true, 5% (all in prod namespaces) without
// an owner annotation.
func createConfigMaps(ctx context.Context, cs kubernetes.Interface, from, to, namespaces, concurrency int) error {
	next := atomic.Int64{}
	next.Store(int64(from))
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				cm := &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{
						Name:      fmt.Sprintf("cm-%06d", i),
						Namespace: nsName(i % namespaces),
						Labels:    map[string]string{"app": "bench", "tier": strconv.Itoa(i % 3)},
					},
					Data: map[string]string{"config.yaml": "replicas: 3\nimage: nginx:1.27\n", "index": strconv.Itoa(i)},
				}
				if i%100 == 7 {
					cm.Labels["debug"] = "true"
				}
				if i%20 != 4 {
					cm.Annotations = map[string]string{"owner": "team-" + strconv.Itoa(i%7)}
				}
				if _, err := cs.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("creating %s/%s: %w", cm.Namespace, cm.Name, err); cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// gcTraceRE reads the live heap after a GC from a GODEBUG=gctrace=1
// line: "gc 7 @0.412s 3%: ..., 9->10->4 MB, 10 MB goal, ...".
var (
	gcTraceRE     = regexp.MustCompile(`(?m)^gc \d+ @.* \d+->\d+->(\d+) MB`)
	gcTraceLineRE = regexp.MustCompile(`(?m)^gc \d+ @.*\n`)
)

// scan runs the celadon binary's scan and reads its JSON summary.
func scan(ctx context.Context, celadon, policies, kubeconfig string, extra []string, outPath string) (row, error) {
	args := append([]string{"scan", "-p", policies, "--kubeconfig", kubeconfig, "-o", "json"}, extra...)
	out, err := os.Create(outPath)
	if err != nil {
		return row{}, err
	}
	defer out.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, celadon, args...)
	cmd.Stdout, cmd.Stderr = out, &stderr
	// The live heap after each GC: what the scan keeps, which RSS blurs
	// with the garbage of the pages between collections.
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		// Some ConfigMaps are denied: exit 1 is the scan's answer.
		return row{}, fmt.Errorf("%s %s: %v (want exit 1)\n%s", celadon, strings.Join(args, " "), err, gcTraceLineRE.ReplaceAllString(stderr.String(), ""))
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r := row{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	for _, m := range gcTraceRE.FindAllStringSubmatch(stderr.String(), -1) {
		live, _ := strconv.Atoi(m[1])
		r.maxLiveMB = max(r.maxLiveMB, live)
		r.gcs++
	}
	if ru != nil {
		r.maxRSSKiB = ru.Maxrss // KiB on Linux
	}
	if _, err := out.Seek(0, 0); err != nil {
		return row{}, err
	}
	var doc struct {
		Summary struct {
			Objects, Denied, ListRequests int
		}
		Objects []json.RawMessage
	}
	if err := json.NewDecoder(out).Decode(&doc); err != nil {
		return row{}, fmt.Errorf("reading the scan's JSON: %v", err)
	}
	r.scanned, r.denied, r.listRequest, r.listed = doc.Summary.Objects, doc.Summary.Denied, doc.Summary.ListRequests, len(doc.Objects)
	return r, nil
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
