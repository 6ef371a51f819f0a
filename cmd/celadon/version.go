package main

// `celadon version` and `celadon --version`: what was built, from what,
// when.

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at build time with
//
//	-ldflags "-X main.version=v1.2.3 -X main.commit=abc1234 -X main.date=2026-01-02T03:04:05Z"
//
// Unset, commit and date come from the VCS information the go command
// stamps into binaries built in a Git checkout, and version from the module
// version of `go install celadon.io/celadon/cmd/celadon@vX.Y.Z`.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

func init() {
	rootCmd.AddCommand(newVersionCmd())
	// `celadon --version` prints what `celadon version` does. cobra adds
	// the flag when Version is set, as -v too unless the flag exists: it is
	// declared here without the shorthand, which `celadon test -v` means
	// verbose. The template reads the build information when it runs.
	rootCmd.Version = buildInfo().version
	rootCmd.Flags().Bool("version", false, "print the version, as the version command does")
	cobra.AddTemplateFunc("celadonVersion", func() string { return buildInfo().String() })
	rootCmd.SetVersionTemplate("{{celadonVersion}}\n")
}

func newVersionCmd() *cobra.Command {
	var short bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Long: `Version prints Celadon's version, the commit and date it was built from, and
the Go toolchain and platform:
  celadon v1.2.3 (commit abc1234, built 2026-01-02T03:04:05Z, go1.26.0 linux/amd64)
With --short, only the version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildInfo()
			if short {
				fmt.Fprintln(cmd.OutOrStdout(), info.version)
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), info.String())
			return nil
		},
	}
	cmd.Flags().BoolVar(&short, "short", false, "print only the version")
	return cmd
}

// versionInfo describes the running binary.
type versionInfo struct {
	version, commit, date, goVersion, platform string
}

func (v versionInfo) String() string {
	return fmt.Sprintf("celadon %s (commit %s, built %s, %s %s)", v.version, v.commit, v.date, v.goVersion, v.platform)
}

// buildInfo returns the version information: the -ldflags values, else
// what the go command recorded in the binary, else "unknown".
func buildInfo() versionInfo {
	v := versionInfo{version: version, commit: commit, date: date, goVersion: runtime.Version(), platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = fillFromBuildInfo(v, bi)
	}
	if v.version == "" {
		v.version = "dev"
	}
	if v.commit == "" {
		v.commit = "unknown"
	}
	if v.date == "" {
		v.date = "unknown"
	}
	return v
}

// fillFromBuildInfo fills in what -ldflags left unset from the binary's
// build information.
func fillFromBuildInfo(v versionInfo, bi *debug.BuildInfo) versionInfo {
	if (v.version == "" || v.version == "dev") && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.version = bi.Main.Version
	}
	var revision, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			if v.date == "" {
				v.date = s.Value
			}
		case "vcs.modified":
			modified = s.Value
		}
	}
	if v.commit == "" && revision != "" {
		if len(revision) > 12 {
			revision = revision[:12]
		}
		if modified == "true" {
			revision += "-dirty"
		}
		v.commit = revision
	}
	return v
}
