// Command celadon is the Celadon admission webhook and its offline tools.
//
// Each subcommand lives in a file of its own and adds itself to rootCmd in
// an init function.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra: 1 for a denial, 2
// for bad usage, unreadable input or a policy error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf returns an error that exits 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

var rootCmd = &cobra.Command{
	Use:           "celadon",
	Short:         "Kubernetes admission webhook driven by CEL policies",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the command line and returns the exit code.
func run(args []string) int {
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(rootCmd.ErrOrStderr(), "celadon:", ee.err)
		}
		return ee.code
	}
	// cobra's own errors are usage errors: unknown flags, missing arguments.
	fmt.Fprintln(rootCmd.ErrOrStderr(), "celadon:", err)
	return 2
}
