package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// readmeYAMLFiles returns the ```yaml blocks of file's section heading
// (up to the next heading) whose first line names a file ("# name" or
// "# name: comment"), by name.
func readmeYAMLFiles(t *testing.T, file, heading string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]string{}
	var (
		found, in bool
		name      string
		block     strings.Builder
	)
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case !found:
			found = line == heading
		case !in && strings.HasPrefix(line, "#"):
			return files // the next heading
		case !in && line == "```yaml":
			in, name = true, ""
			block.Reset()
		case in && line == "```":
			in = false
			if name != "" {
				files[name] = block.String()
			}
		case in:
			if rest, ok := strings.CutPrefix(line, "# "); ok && block.Len() == 0 {
				name, _, _ = strings.Cut(rest, ":")
			}
			block.WriteString(line + "\n")
		}
	}
	if !found {
		t.Fatalf("%s: no heading %q", file, heading)
	}
	return files
}

// TestExceptionsOverlay builds the overlay of README.md's "Granting a team
// its exceptions ConfigMap" over the self-signed overlay and checks what
// the section promises: the exceptions directory is an emptyDir given to
// --exceptions-dir, the team's ConfigMap is mounted whole (hot reload) in
// the subdirectory of a namespace, and the team may get, update and patch
// that ConfigMap and nothing else: not create, list or watch (which
// resourceNames cannot restrict), not the policies.
func TestExceptionsOverlay(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	files := readmeYAMLFiles(t, filepath.Join(abs, "README.md"), "### Granting a team its exceptions ConfigMap")
	for _, name := range []string{"kustomization.yaml", "exceptions-patch.yaml", "team-a-exceptions.yaml"} {
		if files[name] == "" {
			t.Fatalf("README.md: no yaml block for %s (found %v)", name, slices.Sorted(func(yield func(string) bool) {
				for k := range files {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}
	overlay := t.TempDir()
	installed, err := filepath.Rel(overlay, filepath.Join(abs, SelfSignedOverlay))
	if err != nil {
		t.Fatal(err)
	}
	kustomization := strings.Replace(files["kustomization.yaml"], "- ../self-signed ", "- "+installed+" ", 1)
	if kustomization == files["kustomization.yaml"] {
		t.Fatal("README.md's kustomization.yaml no longer names ../self-signed")
	}
	files["kustomization.yaml"] = kustomization
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(overlay, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rel, err := filepath.Rel(abs, overlay)
	if err != nil {
		t.Fatal(err)
	}
	b := built{t: t, dir: rel, objs: build(t, rel)}

	var dep appsv1.Deployment
	b.get("Deployment", "celadon", &dep)
	spec := dep.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	var c *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "celadon" {
			c = &spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatal("no celadon container")
	}
	dir := ""
	for _, e := range c.Env {
		if e.Name == "CELADON_EXCEPTIONS_DIR" {
			dir = e.Value
		}
	}
	if dir == "" {
		t.Fatalf("no CELADON_EXCEPTIONS_DIR in %+v", c.Env)
	}
	teamMounts := 0
	dirMounted, policiesMounted := false, false
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		switch {
		case m.MountPath == "/etc/celadon/policies":
			policiesMounted = true
		case m.MountPath == dir:
			dirMounted = v.EmptyDir != nil
		case filepath.Dir(m.MountPath) == dir:
			teamMounts++
			ns := filepath.Base(m.MountPath)
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				t.Errorf("the team's subdirectory %q is not a namespace name: %v", ns, msgs)
			}
			if v.ConfigMap == nil || v.ConfigMap.Name != "celadon-exceptions-"+ns || m.SubPath != "" || !m.ReadOnly {
				t.Errorf("mount %+v of volume %+v: want the whole ConfigMap celadon-exceptions-%s, read-only", m, v, ns)
			}
		}
	}
	if !dirMounted || teamMounts != 1 || !policiesMounted {
		t.Errorf("mounts %+v: want the exceptions emptyDir at %s, one team's ConfigMap in it, and the policies still", c.VolumeMounts, dir)
	}

	var cm corev1.ConfigMap
	b.get("ConfigMap", "celadon-exceptions-team-a", &cm)
	if cm.Namespace != Namespace || len(cm.Data) != 0 || len(cm.BinaryData) != 0 {
		t.Errorf("ConfigMap %s/%s with data %v: want it empty in %s, so that re-applying keeps the team's keys", cm.Namespace, cm.Name, cm.Data, Namespace)
	}
	var role rbacv1.Role
	b.get("Role", "celadon-exceptions-team-a", &role)
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"celadon-exceptions-team-a"}, Verbs: []string{"get", "update", "patch"}}}
	if role.Namespace != Namespace || !equalRules(role.Rules, want) {
		t.Errorf("Role %s/%s rules %+v, want %+v", role.Namespace, role.Name, role.Rules, want)
	}
	var rb rbacv1.RoleBinding
	b.get("RoleBinding", "celadon-exceptions-team-a", &rb)
	if rb.Namespace != Namespace || rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name ||
		len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "Group" || rb.Subjects[0].Name != "team-a" {
		t.Errorf("RoleBinding %+v", rb)
	}
}
