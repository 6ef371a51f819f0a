// Command gen writes the files of deploy/ generated from policies/ (see
// celadon.io/celadon/test/deploy.Generate). Run it as
// `go generate ./test/deploy` from the repository root.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"celadon.io/celadon/test/deploy"
)

func main() {
	root := "../.."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	if err := run(root); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	files, err := deploy.Generate(root)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.Path))
		keep[p] = true
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if old, err := os.ReadFile(p); err == nil && string(old) == string(f.Data) {
			continue
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.ToSlash(f.Path))
	}
	// The generated directories are the generator's: remove copies of
	// policies that no longer exist.
	for _, gd := range deploy.GeneratedDirs {
		dir := filepath.Join(root, filepath.FromSlash(gd))
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if !keep[p] {
				if err := os.RemoveAll(p); err != nil {
					return err
				}
				fmt.Println("removed", filepath.ToSlash(filepath.Join(gd, e.Name())))
			}
		}
	}
	return nil
}
