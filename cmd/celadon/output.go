package main

// -o/--output: the formats a command prints, in one list per command that
// checks the flag, lists them in --help and offers them to shell
// completion.

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// outputFormat is one value of a command's -o.
type outputFormat struct {
	name string
	help string // the description shell completion shows
}

// outputFlag is the value of -o/--output: one of formats, checked as the
// command line is parsed.
type outputFlag struct {
	value   *string
	formats []outputFormat
}

// addOutputFlag adds -o/--output to cmd, storing the format in p: the
// first of formats by default, any other of them, and nothing else. Shell
// completion offers them with their descriptions.
func addOutputFlag(cmd *cobra.Command, p *string, formats []outputFormat) {
	*p = formats[0].name
	f := &outputFlag{value: p, formats: formats}
	cmd.Flags().VarP(f, "output", "o", "output format: "+f.names())
	err := cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		comps := make([]cobra.Completion, len(formats))
		for i, fm := range formats {
			comps[i] = cobra.CompletionWithDesc(fm.name, fm.help)
		}
		return comps, cobra.ShellCompDirectiveNoFileComp
	})
	if err != nil {
		panic(err) // the flag was just added, once
	}
}

func (f *outputFlag) names() string {
	names := make([]string, len(f.formats))
	for i, fm := range f.formats {
		names[i] = fm.name
	}
	return strings.Join(names, ", ")
}

func (f *outputFlag) String() string { return *f.value }

func (f *outputFlag) Set(s string) error {
	for _, fm := range f.formats {
		if fm.name == s {
			*f.value = s
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: want one of %s", s, f.names())
}

func (f *outputFlag) Type() string { return "format" }
