// Command load drives a running `celadon serve` with AdmissionReviews over
// HTTPS and reports throughput, latency percentiles, errors and the
// server's memory and CPU.
//
//	go run ./test/load -spawn ./bin/celadon -c 1,8,32 -path /mutate,/validate -d 5s -baseline
//	go run ./test/load -spawn ./bin/celadon -policies synthetic:1000 -c 32 -d 10s   # RSS with 1,000 policies
//	go run ./test/load -spawn ./bin/celadon -pods 200                                 # pod CREATE latency, webhook vs none
//	go run ./test/load -spawn ./bin/celadon -soak 10m                                 # soak: reloads, rotations, RSS, goroutines
//	go run ./test/load -spawn ./bin/celadon -floor -path /mutate,/validate -c 32       # Celadon over a no-op webhook's floor
//	go run ./test/load -spawn ./bin/celadon -path /mutate -c 32 -d 10s -cpuprofile /tmp/cpu.pprof
//	go run ./test/load -url https://127.0.0.1:9443/validate -ca certs/ca.crt -server-pid 1234 -c 32 -n 100000
//
// With -spawn it starts etcd and kube-apiserver (bin/, through
// internal/controlplane: serve needs a namespace informer), creates the
// namespaces the requests name, and runs the given celadon binary as a
// subprocess on 127.0.0.1 with generated certificates, once per -policies
// directory. The client and the server share the machine's cores; the
// table reports each one's CPU use so that the share is visible.
//
// With -floor, every run of Celadon is followed by one of the same path,
// concurrency and rate against a no-op HTTPS webhook (this binary run with
// -serve-floor, so that its CPU is read from /proc as Celadon's is), and a
// second table gives Celadon's figures over the floor's.
//
// Traffic only ever goes to 127.0.0.1, and every run stops by itself:
// after -d, after -n requests, and in any case after -max-duration.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"celadon.io/celadon/internal/devenv"
	"celadon.io/celadon/internal/synthetic"
	"celadon.io/celadon/test/load/loadgen"
)

// EmptyPolicies names the baseline: an empty policy directory.
const EmptyPolicies = "EMPTY"

// SyntheticPrefix, followed by a count, names a generated set of that many
// policies (internal/synthetic: five match the pod requests).
const SyntheticPrefix = "synthetic:"

type options struct {
	url, ca     string
	serverPID   int
	spawn       string
	policies    string
	baseline    bool
	paths       string
	conc        string
	rate        float64
	duration    time.Duration
	count       int64
	maxDuration time.Duration
	warmup      time.Duration
	timeout     time.Duration
	mix         string
	pod         string
	json        bool
	serveArgs   string
	pods        int
	podBatch    int
	soak        time.Duration
	soakReload  time.Duration
	soakRotate  time.Duration
	soakSample  time.Duration
	floor       bool
	floorRounds int
	serveFloor  bool
	floorCerts  string
	cpuprofile  string
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "webhook base URL or URL with path, https://127.0.0.1:PORT (not with -spawn)")
	flag.StringVar(&o.ca, "ca", "", "CA file the server's certificate is checked against (with -url)")
	flag.IntVar(&o.serverPID, "server-pid", 0, "pid of the server, for its RSS and CPU (with -url)")
	flag.StringVar(&o.spawn, "spawn", "", "celadon binary: start etcd, kube-apiserver and `celadon serve` locally and load them")
	flag.StringVar(&o.policies, "policies", "policies", "with -spawn: comma-separated policy directories to serve in turn; EMPTY is an empty directory (the baseline), synthetic:N a generated set of N policies")
	flag.BoolVar(&o.baseline, "baseline", false, "with -spawn: also run an EMPTY policy set at the highest concurrency on each path")
	flag.StringVar(&o.paths, "path", "/mutate", "comma-separated webhook paths (/mutate, /validate, /mutate/fail, ...)")
	flag.StringVar(&o.conc, "c", "32", "comma-separated concurrencies (connections = concurrent requests)")
	flag.Float64Var(&o.rate, "rate", 0, "open loop: offer this many requests/s in all, sent by up to -c workers; latency counts from each request's due time (default: closed loop)")
	flag.DurationVar(&o.duration, "d", 0, "duration of each run (default 10s when -n is not given)")
	flag.Int64Var(&o.count, "n", 0, "requests per run (the run also ends at -d when both are given)")
	flag.DurationVar(&o.maxDuration, "max-duration", 5*time.Minute, "hard cap on each run")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured traffic before each run")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	flag.StringVar(&o.mix, "mix", loadgen.DefaultMix, "request mix: kind=weight,... of "+strings.Join(loadgen.Kinds, ", "))
	flag.StringVar(&o.pod, "pod", "", "pod JSON of the pod requests (default engine/testdata/pod.json)")
	flag.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	flag.IntVar(&o.pods, "pods", 0, "with -spawn: instead of reviews, create this many pods through kube-apiserver in each of three modes (the webhook installed, none, a no-op webhook) and compare the latencies")
	flag.IntVar(&o.podBatch, "pod-batch", 25, "with -pods: pods per batch; batches of the three modes alternate")
	flag.DurationVar(&o.soak, "soak", 0, "with -spawn: a soak run this long: the mix on /mutate and /validate at -rate per path (default 300) over -c connections, with policy edits and certificate rotations; prints RSS and goroutines over time")
	flag.DurationVar(&o.soakReload, "soak-reload", 30*time.Second, "with -soak: a policy edit this often")
	flag.DurationVar(&o.soakRotate, "soak-rotate", 2*time.Minute, "with -soak: a certificate rotation (new CA) this often")
	flag.DurationVar(&o.soakSample, "soak-sample", 10*time.Second, "with -soak: sample RSS and goroutines this often")
	flag.StringVar(&o.serveArgs, "serve-args", "", "with -spawn: extra space-separated flags for celadon serve")
	flag.BoolVar(&o.floor, "floor", false, "with -spawn: follow every run with the same run against a no-op HTTPS webhook (the floor), and print Celadon/floor ratios")
	flag.IntVar(&o.floorRounds, "floor-rounds", 1, "with -floor: Celadon/floor pairs of runs per path and concurrency; the ratios are of the medians")
	flag.BoolVar(&o.serveFloor, "serve-floor", false, "internal: serve the no-op webhook on the listener -floor hands over")
	flag.StringVar(&o.floorCerts, "floor-cert-dir", "", "internal: with -serve-floor, the directory of tls.crt and tls.key")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "with -spawn and a single run (one -policies, -path and -c, -d given): write a CPU profile of celadon serve over the measured window to this file (serve gets --pprof-bind-address on 127.0.0.1)")
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf("unexpected arguments: %v", flag.Args())
	}
	if o.serveFloor {
		if err := serveFloor(o.floorCerts); err != nil {
			fatalf("floor: %v", err)
		}
		return
	}
	if err := run(o, os.Stdout, os.Stderr); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "load: "+format+"\n", args...)
	os.Exit(1)
}

// serveFloor is the -serve-floor process: the no-op webhook until SIGTERM.
func serveFloor(certDir string) error {
	ln, err := loadgen.FloorListener()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return loadgen.ServeFloor(ctx, ln, certDir)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("concurrency %q: want 1-4096", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no concurrency given")
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func run(o options, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "load: "+format+"\n", args...) }
	mix, err := loadgen.ParseMix(o.mix)
	if err != nil {
		return err
	}
	pod, err := loadgen.LoadPod(o.pod)
	if err != nil {
		return err
	}
	templates, err := loadgen.BuildTemplates(mix, pod)
	if err != nil {
		return err
	}
	concs, err := parseInts(o.conc)
	if err != nil {
		return err
	}
	paths := splitList(o.paths)
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("path %q: want /mutate, /validate, ...", p)
		}
	}
	if o.duration <= 0 && o.count <= 0 {
		o.duration = 10 * time.Second
	}
	maxConc := 0
	for _, c := range concs {
		maxConc = max(maxConc, c)
	}
	base := loadgen.RunConfig{
		Duration: o.duration, Count: o.count, MaxDuration: o.maxDuration,
		Warmup: o.warmup, Timeout: o.timeout, Rate: o.rate,
		Templates: templates, Schedule: loadgen.Schedule(mix),
	}
	if o.floor && (o.spawn == "" || o.pods > 0 || o.soak > 0) {
		return fmt.Errorf("-floor needs -spawn, and neither -pods nor -soak")
	}
	if o.floorRounds < 1 {
		return fmt.Errorf("-floor-rounds %d: want at least 1", o.floorRounds)
	}
	if o.cpuprofile != "" {
		// One run, so that the profile is of one thing.
		if o.spawn == "" || o.pods > 0 || o.soak > 0 || o.floor || o.baseline || len(splitList(o.policies)) != 1 || len(paths) != 1 || len(concs) != 1 {
			return fmt.Errorf("-cpuprofile needs -spawn and a single run: one -policies, -path and -c, no -baseline, -floor, -pods or -soak")
		}
		if o.duration < time.Second {
			return fmt.Errorf("-cpuprofile needs -d of at least 1s: the profile covers it")
		}
	}
	var results []*loadgen.Result
	var ratios []loadgen.FloorRatio
	var floor *loadgen.Server // set with -floor
	pprofAddr := ""           // serve's --pprof-bind-address, with -cpuprofile
	runOne := func(label, url, caFile string, pid, c int, profile bool) (*loadgen.Result, error) {
		client, err := loadgen.NewClient(caFile, c, o.timeout)
		if err != nil {
			return nil, err
		}
		cfg := base
		cfg.Label, cfg.URL, cfg.Concurrency, cfg.Client, cfg.ServerPID = label, url, c, client, pid
		var profErr chan error
		if profile {
			profErr = make(chan error, 1)
			cfg.Started = func() {
				go func() { profErr <- fetchProfile(pprofAddr, o.duration, o.cpuprofile) }()
			}
		}
		logf("run: policies=%s %s c=%d", label, url, c)
		r, err := loadgen.Run(cfg)
		client.CloseIdleConnections()
		if err != nil {
			return nil, err
		}
		if profErr != nil {
			if err := <-profErr; err != nil {
				return nil, fmt.Errorf("-cpuprofile: %w", err)
			}
			logf("     CPU profile of the server over the run: %s", o.cpuprofile)
		}
		logf("     %.0f req/s, p99 %.2f ms, %d errors", r.RPS, r.P99ms, r.ErrorCount)
		results = append(results, r)
		return r, nil
	}
	measure := func(label string, srv *loadgen.Server, paths []string, concs []int) error {
		for _, p := range paths {
			for _, c := range concs {
				// Celadon, floor, Celadon, floor...: both see the same
				// drift of a shared machine.
				var as, fs []*loadgen.Result
				for range o.floorRounds {
					a, err := runOne(label, srv.BaseURL+p, srv.CAFile, srv.PID, c, o.cpuprofile != "")
					if err != nil {
						return err
					}
					as = append(as, a)
					if floor == nil {
						break
					}
					f, err := runOne(loadgen.FloorLabel, floor.BaseURL+p, floor.CAFile, floor.PID, c, false)
					if err != nil {
						return err
					}
					fs = append(fs, f)
				}
				if floor != nil {
					ratios = append(ratios, loadgen.CompareFloor(as, fs))
				}
			}
		}
		return nil
	}

	if o.spawn == "" {
		if o.url == "" || o.ca == "" {
			return fmt.Errorf("give -url and -ca, or -spawn")
		}
		if err := loadgen.CheckLocal(o.url); err != nil {
			return err
		}
		baseURL := strings.TrimSuffix(o.url, "/")
		// A URL with a path overrides -path.
		if i := strings.Index(strings.TrimPrefix(baseURL, "https://"), "/"); i >= 0 {
			cut := len("https://") + i
			paths, baseURL = []string{baseURL[cut:]}, baseURL[:cut]
		}
		if err := measure("(given)", &loadgen.Server{BaseURL: baseURL, CAFile: o.ca, PID: o.serverPID}, paths, concs); err != nil {
			return err
		}
		return report(o, stdout, results, nil)
	}

	bin, err := filepath.Abs(o.spawn)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("-spawn: %w (build it with make build)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var e *loadgen.Env
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sigs:
		case <-done:
			return
		}
		logf("interrupted: stopping the servers and the control plane")
		cancel()
		if e != nil {
			e.Stop()
		}
		os.Exit(130)
	}()
	e, err = loadgen.StartEnv(ctx, logf)
	if err != nil {
		return err
	}
	defer e.Stop()
	if o.soak > 0 {
		rate := o.rate
		if rate <= 0 {
			rate = 300
		}
		r, err := e.Soak(ctx, loadgen.SoakOptions{
			Bin: bin, PoliciesDir: splitList(o.policies)[0], Duration: o.soak,
			Reload: o.soakReload, Rotate: o.soakRotate, Sample: o.soakSample,
			Rate: rate, Concurrency: concs[0], Templates: templates, Schedule: loadgen.Schedule(mix),
		}, logf)
		if err != nil {
			return err
		}
		return reportSoak(o, stdout, r)
	}
	if o.pods > 0 {
		dir := splitList(o.policies)[0]
		srv, err := e.StartServer(ctx, bin, dir, "celadon-pods", strings.Fields(o.serveArgs), logf)
		if err != nil {
			return err
		}
		r, err := e.MeasurePodCreation(ctx, srv, dir, pod, o.pods, o.podBatch, logf)
		if err != nil {
			return err
		}
		if o.json {
			return writeJSON(stdout, r)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "pod CREATE through kube-apiserver\tpods\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
		for _, m := range []struct {
			name string
			s    loadgen.LatencySummary
		}{
			{"with the webhook (" + dir + ")", r.With}, {"without", r.Without}, {"with a no-op webhook", r.Noop},
			{"with a no-op webhook returning the same patch", r.PatchNoop},
			{"unmatched pod, with the webhook", r.WithUnmatched}, {"unmatched pod, without", r.WithoutUnmatched}, {"unmatched pod, with a no-op webhook", r.NoopUnmatched},
			{"unmatched pod, with the patching no-op webhook", r.PatchNoopUnmatched},
		} {
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", m.name, m.s.Pods, m.s.P50Ms, m.s.P90Ms, m.s.P99Ms, m.s.MaxMs)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "median difference: %+.2f ms with the webhook, %+.2f ms with a no-op webhook, %+.2f ms with a no-op webhook returning the same patch (batches of %d, interleaved)\n", r.MedianDiffMs, r.Noop.P50Ms-r.Without.P50Ms, r.PatchNoop.P50Ms-r.Without.P50Ms, r.Batch)
		fmt.Fprintf(stdout, "unmatched pod: %+.2f ms with the webhook, %+.2f ms with a no-op webhook\n", r.UnmatchedMedianDiffMs, r.NoopUnmatched.P50Ms-r.WithoutUnmatched.P50Ms)
		return nil
	}
	if o.floor {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		if floor, err = e.StartFloor(self, "floor", logf); err != nil {
			return err
		}
	}
	serveArgs := strings.Fields(o.serveArgs)
	if o.cpuprofile != "" {
		port, err := devenv.FreePort()
		if err != nil {
			return err
		}
		pprofAddr = "127.0.0.1:" + strconv.Itoa(port)
		serveArgs = append(serveArgs, "--pprof-bind-address", pprofAddr)
	}
	type set struct {
		dir   string
		concs []int
	}
	var sets []set
	for _, p := range splitList(o.policies) {
		sets = append(sets, set{p, concs})
	}
	if o.baseline {
		sets = append(sets, set{EmptyPolicies, []int{maxConc}})
	}
	for i, s := range sets {
		dir, label := s.dir, s.dir
		if n, ok := strings.CutPrefix(dir, SyntheticPrefix); ok {
			count, err := strconv.Atoi(n)
			if err != nil || count < 5 {
				return fmt.Errorf("-policies %s: want %sN with N at least 5", dir, SyntheticPrefix)
			}
			dir = filepath.Join(e.Dir, fmt.Sprintf("synthetic-%d", i))
			label = fmt.Sprintf("synthetic=%d", count)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, "synthetic.yaml"), synthetic.Policies(count), 0o644); err != nil {
				return err
			}
		}
		if dir == EmptyPolicies {
			dir = filepath.Join(e.Dir, fmt.Sprintf("empty-%d", i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		} else if label == "policies" {
			label = "shipped"
		}
		args := serveArgs
		if s.dir == EmptyPolicies {
			// serve refuses an empty set unless told it is meant.
			args = append(slices.Clone(serveArgs), "--allow-empty-policies")
		}
		srv, err := e.StartServer(ctx, bin, dir, fmt.Sprintf("celadon-%d", i), args, logf)
		if err != nil {
			return err
		}
		if err := measure(label, srv, paths, s.concs); err != nil {
			return err
		}
		srv.Stop()
	}
	return report(o, stdout, results, ratios)
}

// writeJSON writes v as indented JSON, for -json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fetchProfile writes a CPU profile of the server at pprofAddr, taken over
// d (whole seconds, as pprof counts them), to file.
func fetchProfile(pprofAddr string, d time.Duration, file string) error {
	secs := max(1, int(d/time.Second))
	c := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: HTTP %d: %s", resp.Request.URL, resp.StatusCode, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// report prints the results, then with -floor the Celadon/floor ratios.
// Its JSON is the list of results, or with -floor an object holding it
// and the ratios.
func report(o options, w io.Writer, results []*loadgen.Result, ratios []loadgen.FloorRatio) error {
	if o.json {
		if o.floor {
			return writeJSON(w, struct {
				Results     []*loadgen.Result    `json:"results"`
				FloorRatios []loadgen.FloorRatio `json:"floor_ratios"`
			}{results, ratios})
		}
		return writeJSON(w, results)
	}
	PrintTable(w, results)
	if o.floor {
		fmt.Fprintln(w)
		PrintFloorTable(w, ratios)
	}
	return nil
}

// PrintFloorTable prints Celadon's figures over the floor's.
func PrintFloorTable(w io.Writer, ratios []loadgen.FloorRatio) {
	if len(ratios) > 0 && ratios[0].Runs > 1 {
		fmt.Fprintf(w, "Celadon / floor (a no-op HTTPS webhook), medians of %d interleaved runs each:\n", ratios[0].Runs)
	} else {
		fmt.Fprintln(w, "Celadon / floor (a no-op HTTPS webhook), runs interleaved:")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policies\tpath\tc\trate\treq/s\tfloor req/s\treq/s ×floor\tserver µs/req\tfloor µs/req\tµs/req ×floor\tp99 ms\tfloor p99 ms\tp99 ×floor\terrors\t")
	for _, r := range ratios {
		rate := "closed"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%.0f/s", r.Rate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.0f\t%.0f\t%.2f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t\n",
			r.Label, r.Path, r.Concurrency, rate, r.RPS, r.FloorRPS, r.RPSRatio, r.CPUPerReq, r.FloorCPUPerReq, r.CPURatio,
			r.P99ms, r.FloorP99ms, r.P99Ratio, r.Errors)
	}
	tw.Flush()
}

func reportSoak(o options, w io.Writer, r *loadgen.SoakResult) error {
	if o.json {
		return writeJSON(w, r)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "at s\trequests\terrors\tserver RSS MiB\tgoroutines\t")
	for _, s := range r.Samples {
		fmt.Fprintf(tw, "%.0f\t%d\t%d\t%.1f\t%d\t\n", s.At, s.Requests, s.Errors, float64(s.RSSKiB)/1024, s.Goroutines)
	}
	tw.Flush()
	fmt.Fprintln(w)
	PrintTable(w, r.Results)
	var errs uint64
	for _, res := range r.Results {
		errs += res.ErrorCount
	}
	fmt.Fprintf(w, "\nsoak: %d errors; %d policy edits and %d certificate rotations served", errs, r.Reloads, r.Rotations)
	if n := len(r.Samples); n >= 4 {
		first, last := r.Samples[1], r.Samples[n-1] // the first is before any traffic
		fmt.Fprintf(w, "; RSS %.1f → %.1f MiB, goroutines %d → %d (second sample → last)", float64(first.RSSKiB)/1024, float64(last.RSSKiB)/1024, first.Goroutines, last.Goroutines)
	}
	fmt.Fprintln(w)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if errs > 0 || len(r.Problems) > 0 {
		return fmt.Errorf("soak: %d errors, %d problems", errs, len(r.Problems))
	}
	return nil
}

// PrintTable prints results as an aligned table, then the errors.
func PrintTable(w io.Writer, results []*loadgen.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policies\tpath\tc\trate\trequests\treq/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tdenied\terrors\tserver CPU\tserver µs/req\tclient CPU\tmachine CPU\tsteal\tserver RSS MiB\t")
	for _, r := range results {
		rss := "-"
		if r.ServerPeakRSSKiB > 0 {
			rss = fmt.Sprintf("%.0f", float64(r.ServerPeakRSSKiB)/1024)
		}
		scpu, sper := "-", "-"
		if r.ServerCPUCores > 0 {
			scpu = fmt.Sprintf("%.2f", r.ServerCPUCores)
			sper = fmt.Sprintf("%.0f", r.ServerCPUPerReq)
		}
		rate := "closed"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%.0f/s", r.Rate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t\n",
			r.Label, r.Path, r.Concurrency, rate, r.Requests, r.RPS, r.P50ms, r.P90ms, r.P99ms, r.MaxMs,
			r.Denied, r.ErrorCount, scpu, sper, r.ClientCPUCores, r.MachineCPUCores, r.StealCores, rss)
	}
	tw.Flush()
	for _, r := range results {
		if r.ErrorCount == 0 {
			continue
		}
		fmt.Fprintf(w, "errors, %s %s c=%d:", r.Label, r.Path, r.Concurrency)
		for _, k := range loadgen.SortedKeys(r.Errors) {
			fmt.Fprintf(w, " %s=%d", k, r.Errors[k])
		}
		fmt.Fprintln(w)
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(w, "  e.g. %s\n", s)
		}
	}
}
