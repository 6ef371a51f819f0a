package devenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"celadon.io/celadon/internal/atomicdir"
)

// DataDirName is the symlink that points at the current timestamped
// directory of a Secret or ConfigMap volume.
const DataDirName = atomicdir.DataDirName

// WriteAtomic makes dir hold exactly files (name → content), as the
// kubelet's atomic writer updates a Secret or ConfigMap volume: see
// atomicdir.Write, the code the server writes its self-signed certificates
// with.
func WriteAtomic(dir string, files map[string][]byte) error {
	return atomicdir.Write(dir, files)
}

// ReadPolicyFiles reads the policy files (*.yaml, *.yml, *.json) at the top
// of dir, by name, to copy them into a ConfigMap-style directory with
// WriteAtomic. Entries starting with "." are skipped, as the server skips
// them.
func ReadPolicyFiles(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("devenv: %w", err)
		}
		files[name] = data
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("devenv: no policy files (*.yaml, *.yml, *.json) in %s", dir)
	}
	return files, nil
}
