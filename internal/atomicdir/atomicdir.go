// Package atomicdir writes a set of files into a directory the way the
// kubelet updates a Secret or ConfigMap volume: all of them at once, through
// the swap of a "..data" symlink, so that a reader or a file watcher sees
// either the whole old set or the whole new one. Celadon's server writes its
// self-signed certificates this way (controller-runtime's certificate
// watcher reloads them), and the tests lay out policy directories with it.
package atomicdir

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DataDirName is the symlink that points at the current timestamped
// directory of a Secret or ConfigMap volume.
const DataDirName = "..data"

// dataTmpName is the symlink built next to DataDirName and renamed over it.
const dataTmpName = "..data_tmp"

// Write makes dir hold exactly files (name → content), as the
// kubelet's atomic writer updates a Secret or ConfigMap volume:
//
//  1. the files are written into a new directory dir/..<timestamp>.<random>;
//  2. a symlink dir/..data_tmp → ..<timestamp>.<random> is created and
//     renamed over dir/..data in one atomic step: a reader that resolves
//     ..data sees either the whole old set or the whole new one;
//  3. each key gets a symlink dir/<name> → ..data/<name> (created once; it
//     never changes afterwards, only what ..data points at does);
//  4. symlinks of keys no longer in files are removed, then the previous
//     timestamped directory.
//
// dir is created if missing. Names must be plain file names not starting
// with "..". Files are written 0644 (0600 for names ending in ".key").
func Write(dir string, files map[string][]byte) error {
	for name := range files {
		if err := checkKey(name); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	oldTS, _ := os.Readlink(filepath.Join(dir, DataDirName)) // "" when first written
	oldKeys, err := userKeys(dir)
	if err != nil {
		return err
	}

	// 1. The new payload.
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			mode = 0o600
		}
		if err := writeFileSync(filepath.Join(tsDir, name), files[name], mode); err != nil {
			_ = os.RemoveAll(tsDir)
			return fmt.Errorf("atomicdir: %w", err)
		}
	}

	// 2. The atomic swap.
	tmpLink := filepath.Join(dir, dataTmpName)
	_ = os.Remove(tmpLink) // left over from an interrupted write
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		_ = os.RemoveAll(tsDir)
		return fmt.Errorf("atomicdir: %w", err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, DataDirName)); err != nil {
		_ = os.Remove(tmpLink)
		_ = os.RemoveAll(tsDir)
		return fmt.Errorf("atomicdir: %w", err)
	}

	// 3. User-visible symlinks for new keys.
	for _, name := range slices.Sorted(maps.Keys(files)) {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(DataDirName, name), link); err != nil {
			return fmt.Errorf("atomicdir: %w", err)
		}
	}

	// 4. Stale keys, then the previous payload.
	var errs []error
	for _, name := range oldKeys {
		if _, ok := files[name]; !ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if oldTS != "" && oldTS != filepath.Base(tsDir) && strings.HasPrefix(oldTS, "..") && !strings.Contains(oldTS, "/") {
		if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("atomicdir: cleaning up %s: %w", dir, err)
	}
	return nil
}

// checkKey rejects names the kubelet would not project as a plain file.
func checkKey(name string) error {
	switch {
	case name == "", name == ".", strings.HasPrefix(name, ".."):
		return fmt.Errorf("atomicdir: invalid file name %q: empty or starting with \"..\"", name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("atomicdir: invalid file name %q: want a plain file name", name)
	}
	return nil
}

// userKeys lists the key symlinks of dir: the entries that are symlinks
// into ..data.
func userKeys(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("atomicdir: %w", err)
	}
	var keys []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || e.Type()&os.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(target, DataDirName+string(filepath.Separator)) {
			keys = append(keys, e.Name())
		}
	}
	return keys, nil
}

func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
