package devenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// BuildCeladon builds root's ./cmd/celadon into out with the calling
// environment's settings: no -trimpath and no CGO_ENABLED of its own.
// Either would change every dependency's build key, so each test package
// that set one recompiled the whole dependency tree that `go test` had just
// compiled (some six minutes each on a fresh 2-core machine). The binary
// behaves the same; the image's flags are checked by TestBuildFlags.
// The go command is $GO when set, as in the Makefile.
func BuildCeladon(ctx context.Context, root, out string) error {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/celadon")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/celadon: %v\n%s", err, b)
	}
	return nil
}
