package devenv

import (
	"context"
	"fmt"
	"os/exec"
)

// BuildCeladon builds root's ./cmd/celadon into out with the calling
// environment's settings: no -trimpath and no CGO_ENABLED of its own.
// Either would change every dependency's build key, so each test package
// that set one recompiled the whole dependency tree that `go test` had just
// compiled (some six minutes each on a fresh 2-core machine). The binary
// behaves the same; the image's flags are checked by TestBuildFlags.
func BuildCeladon(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/celadon")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/celadon: %v\n%s", err, b)
	}
	return nil
}
