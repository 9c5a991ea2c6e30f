package dashboards

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// composeFile is the part of the compose specification compose.yaml uses.
// Unknown keys fail the decode, so a typo does not pass silently.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]struct{}       `json:"volumes"`
}

type composeService struct {
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	DependsOn   []string          `json:"depends_on"`
	Restart     string            `json:"restart"`
}

// readCompose parses compose.yaml. It is YAML in flow style (JSON) with
// comment lines, so dropping the comments leaves JSON.
func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if !strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
			js.Write(sc.Bytes())
			js.WriteByte('\n')
		}
	}
	dec := json.NewDecoder(&js)
	dec.DisallowUnknownFields()
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// TestCompose checks the monitoring stack's compose file: the three
// services, every bind-mounted file exists, named volumes are declared,
// dependencies name services, every dashboard is mounted, and the
// Prometheus and Grafana configuration point at the compose service names.
func TestCompose(t *testing.T) {
	c := readCompose(t)
	for _, name := range []string{"agent", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("no %s service", name)
		}
	}
	agent := c.Services["agent"]
	if agent.Build == nil {
		t.Fatal("the agent is not built from the repository's Dockerfile")
	}
	if _, err := os.Stat(filepath.Join(agent.Build.Context, agent.Build.Dockerfile)); err != nil {
		t.Errorf("agent build: %v", err)
	}
	mounted := map[string]bool{}
	for name, s := range c.Services {
		if s.Build == nil && s.Image == "" {
			t.Errorf("%s: neither build nor image", name)
		}
		if s.Image != "" && s.Build == nil && !strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest") {
			t.Errorf("%s: pin the image version (%s)", name, s.Image)
		}
		for _, d := range s.DependsOn {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s depends on unknown service %s", name, d)
			}
		}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || len(parts) > 3 {
				t.Errorf("%s: volume %q is not source:target[:mode]", name, v)
				continue
			}
			src := parts[0]
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s: named volume %s is not declared", name, src)
				}
				continue
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
			mounted[filepath.Clean(src)] = true
		}
	}
	dashboards, _ := filepath.Glob("*.json")
	for _, d := range dashboards {
		if !mounted[d] {
			t.Errorf("dashboard %s is not mounted into Grafana", d)
		}
	}
	for _, f := range []string{"prometheus/prometheus.yml", "prometheus/rules", "grafana/provisioning"} {
		if !mounted[filepath.Clean(f)] {
			t.Errorf("%s is not mounted", f)
		}
	}
	// The configuration files name the compose services.
	for file, want := range map[string]string{
		"prometheus/prometheus.yml":                       `"agent:7071"`,
		"grafana/provisioning/datasources/prometheus.yml": "http://prometheus:9090",
		"grafana/provisioning/dashboards/ferry.yml":       "/var/lib/grafana/dashboards/ferry",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not mention %s", file, want)
		}
	}
	if !slices.Contains(agent.Ports, "7071:7071") {
		t.Error("the agent's admin listener (metrics) is not published")
	}
}

// dockerInstruction is one instruction of a Dockerfile, continuation lines
// joined.
type dockerInstruction struct {
	cmd, args string
}

// parseDockerfile splits a Dockerfile into instructions: comments and
// blank lines dropped, lines ending in a backslash joined.
func parseDockerfile(b []byte) []dockerInstruction {
	var out []dockerInstruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, dockerInstruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// TestDockerfile checks the image's structure, since no container engine
// runs here: multi-stage, a static binary, a small non-root final stage.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	ins := parseDockerfile(b)
	var stages []int
	for i, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, i)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("%d stage(s); want a build stage and a small final stage", len(stages))
	}
	build, final := ins[:stages[len(stages)-1]], ins[stages[len(stages)-1]:]
	if !regexp.MustCompile(`(?i)^gcr\.io/distroless/static|^scratch|^alpine`).MatchString(final[0].args) {
		t.Errorf("final stage FROM %s: want a small static base", final[0].args)
	}
	staticBuild := false
	for _, in := range build {
		if in.cmd == "RUN" && strings.Contains(in.args, "CGO_ENABLED=0") && strings.Contains(in.args, "go build") && strings.Contains(in.args, "./gateway") {
			staticBuild = true
		}
	}
	if !staticBuild {
		t.Error("no RUN CGO_ENABLED=0 go build ... ./gateway in the build stage")
	}
	var user, entry string
	copied := false
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "COPY":
			copied = copied || strings.HasPrefix(in.args, "--from=")
		case "HEALTHCHECK":
			if !strings.Contains(in.args, "healthcheck") {
				t.Errorf("HEALTHCHECK %s does not call `gateway healthcheck`", in.args)
			}
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		t.Errorf("final stage runs as %q; want a non-root user", user)
	}
	if !copied {
		t.Error("final stage copies nothing from the build stage")
	}
	if !strings.Contains(entry, "gateway") {
		t.Errorf("ENTRYPOINT %q does not run gateway", entry)
	}
	for _, port := range []string{"7070", "7071"} {
		found := false
		for _, in := range final {
			found = found || in.cmd == "EXPOSE" && slices.Contains(strings.Fields(in.args), port)
		}
		if !found {
			t.Errorf("port %s is not exposed", port)
		}
	}
}

func TestParseDockerfile(t *testing.T) {
	got := parseDockerfile([]byte("# c\nFROM a AS b\n\nRUN x \\\n  y\nuser nonroot\n"))
	want := []dockerInstruction{{"FROM", "a AS b"}, {"RUN", "x  y"}, {"USER", "nonroot"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// FuzzParseDockerfile checks that the parser never panics and that every
// instruction it returns has a command.
func FuzzParseDockerfile(f *testing.F) {
	if b, err := os.ReadFile("../Dockerfile"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("FROM a\\\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range parseDockerfile(b) {
			if in.cmd == "" && in.args != "" {
				t.Fatalf("instruction without a command: %q", in.args)
			}
		}
	})
}
