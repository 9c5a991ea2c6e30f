package dashboards

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
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
	var healthchecks []string
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
			healthchecks = append(healthchecks, in.args)
		}
	}
	checkHealthcheck(t, healthchecks, entry, final)
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

// checkHealthcheck checks the final stage's one HEALTHCHECK: it runs the
// entrypoint's binary as `gateway healthcheck` in exec form (distroless has
// no shell), against the admin port the default CMD listens on, and the
// command's own -timeout is shorter than the runtime's --timeout so that its
// one-line reason is what the runtime records.
func checkHealthcheck(t *testing.T, hcs []string, entry string, final []dockerInstruction) {
	t.Helper()
	if len(hcs) != 1 {
		t.Fatalf("final stage has %d HEALTHCHECK instructions, want one calling `gateway healthcheck`", len(hcs))
	}
	opts, argv, err := parseHealthcheck(hcs[0])
	if err != nil {
		t.Fatalf("HEALTHCHECK %s: %v", hcs[0], err)
	}
	var bin []string
	if err := json.Unmarshal([]byte(entry), &bin); err != nil || len(bin) == 0 {
		t.Fatalf("ENTRYPOINT %s: want exec form", entry)
	}
	if len(argv) < 2 || argv[0] != bin[0] || argv[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK runs %q, want %s healthcheck ...", argv, bin[0])
	}
	flags := map[string]string{}
	for i := 2; i+1 < len(argv); i += 2 {
		flags[argv[i]] = argv[i+1]
	}
	var cmd string
	for _, in := range final {
		if in.cmd == "CMD" {
			cmd = in.args
		}
	}
	if _, port, ok := strings.Cut(strings.TrimPrefix(flags["-addr"], "http://"), ":"); !ok || !strings.Contains(cmd, `"-admin-listen", "0.0.0.0:`+port+`"`) {
		t.Errorf("healthcheck -addr %q is not the admin listener of CMD %s", flags["-addr"], cmd)
	}
	for _, o := range []string{"interval", "timeout", "start-period"} {
		if _, err := time.ParseDuration(opts[o]); err != nil {
			t.Errorf("HEALTHCHECK --%s=%q: %v", o, opts[o], err)
		}
	}
	runtime, _ := time.ParseDuration(opts["timeout"])
	own, err := time.ParseDuration(flags["-timeout"])
	if err != nil || own <= 0 || own >= runtime {
		t.Errorf("healthcheck -timeout %q must be set and shorter than HEALTHCHECK --timeout %s", flags["-timeout"], opts["timeout"])
	}
}

// parseHealthcheck splits a HEALTHCHECK instruction's arguments into its
// --options and the exec-form command after CMD.
func parseHealthcheck(args string) (map[string]string, []string, error) {
	opts := map[string]string{}
	rest := strings.TrimSpace(args)
	for strings.HasPrefix(rest, "--") {
		opt, after, _ := strings.Cut(rest, " ")
		k, v, ok := strings.Cut(strings.TrimPrefix(opt, "--"), "=")
		if !ok || k == "" {
			return nil, nil, fmt.Errorf("option %q: want --name=value", opt)
		}
		opts[k] = v
		rest = strings.TrimSpace(after)
	}
	cmd, ok := strings.CutPrefix(rest, "CMD ")
	if !ok {
		return nil, nil, fmt.Errorf("no CMD after the options in %q", rest)
	}
	var argv []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(cmd)), &argv); err != nil {
		return nil, nil, fmt.Errorf("CMD is not in exec (JSON) form: %v", err)
	}
	if len(argv) == 0 {
		return nil, nil, fmt.Errorf("CMD runs nothing")
	}
	return opts, argv, nil
}

func TestParseHealthcheck(t *testing.T) {
	opts, argv, err := parseHealthcheck(`--interval=30s --timeout=5s CMD ["/bin/gateway", "healthcheck"]`)
	if err != nil || opts["interval"] != "30s" || opts["timeout"] != "5s" || !slices.Equal(argv, []string{"/bin/gateway", "healthcheck"}) {
		t.Fatalf("got %v %q %v", opts, argv, err)
	}
	for _, bad := range []string{`CMD gateway healthcheck`, `--interval CMD ["x"]`, `NONE`, `CMD []`, `CMD null`} {
		if _, _, err := parseHealthcheck(bad); err == nil {
			t.Errorf("parseHealthcheck(%q) accepted", bad)
		}
	}
}

// FuzzParseHealthcheck checks that the HEALTHCHECK parser never panics and
// that what it accepts has exec-form arguments.
func FuzzParseHealthcheck(f *testing.F) {
	f.Add(`--interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/gateway", "healthcheck"]`)
	f.Add(`--=x CMD []`)
	f.Fuzz(func(t *testing.T, s string) {
		opts, argv, err := parseHealthcheck(s)
		if err == nil && (opts == nil || len(argv) == 0) {
			t.Fatalf("accepted %q without options map or arguments", s)
		}
	})
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
