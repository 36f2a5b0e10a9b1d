package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spindlehq/spindle/config"
)

// discovery is what the stand-in API server tells kubectl it serves: the
// kinds of deploy/kubernetes, by group version. kubectl needs discovery
// even for --dry-run=client, to map each kind to its resource.
var discovery = map[string][]apiResource{
	"v1":             {{"configmaps", "ConfigMap"}, {"services", "Service"}, {"secrets", "Secret"}},
	"apps/v1":        {{"deployments", "Deployment"}},
	"policy/v1":      {{"poddisruptionbudgets", "PodDisruptionBudget"}},
	"autoscaling/v2": {{"horizontalpodautoscalers", "HorizontalPodAutoscaler"}},
}

type apiResource struct{ name, kind string }

// fakeAPIServer answers the discovery requests of kubectl (/api, /apis and
// each group version's resource list) and nothing else.
func fakeAPIServer(t *testing.T) *httptest.Server {
	t.Helper()
	type gv struct {
		GroupVersion string `json:"groupVersion"`
		Version      string `json:"version"`
	}
	type group struct {
		Name             string `json:"name"`
		Versions         []gv   `json:"versions"`
		PreferredVersion gv     `json:"preferredVersion"`
	}
	type resource struct {
		Name         string   `json:"name"`
		SingularName string   `json:"singularName"`
		Namespaced   bool     `json:"namespaced"`
		Kind         string   `json:"kind"`
		Verbs        []string `json:"verbs"`
	}
	docs := map[string]any{}
	var groups []group
	for v, rs := range discovery {
		list := []resource{}
		for _, r := range rs {
			list = append(list, resource{r.name, strings.ToLower(r.kind), true, r.kind, []string{"create", "get", "list"}})
		}
		at := "/api/" + v // the core group
		if g, ver, ok := strings.Cut(v, "/"); ok {
			at = "/apis/" + v
			groups = append(groups, group{g, []gv{{v, ver}}, gv{v, ver}})
		}
		docs[at] = map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": v, "resources": list}
	}
	docs["/api"] = map[string]any{"kind": "APIVersions", "versions": []string{"v1"},
		"serverAddressByClientCIDRs": []map[string]string{{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}}}
	docs["/apis"] = map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

// kubectlDryRun runs `kubectl create --dry-run=client -o yaml -f
// kubernetes/` against the stand-in API server. --validate=false: schema
// validation needs the OpenAPI documents of a real cluster; the test
// checks the fields it relies on itself, below.
func kubectlDryRun(t *testing.T) []object {
	t.Helper()
	kubectl := requireTool(t, "kubectl", "Debian package kubernetes-client; scripts/deps.sh installs it")
	api := fakeAPIServer(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: %q}}]
users: [{name: offline, user: {}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: default}}]
current-context: offline
`, api.URL)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubectl, "--kubeconfig", kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"create", "--dry-run=client", "--validate=false", "-o", "yaml", "-f", "kubernetes/")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl create --dry-run=client: %v\n%s", err, stderr.Bytes())
	}
	var objs []object
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("kubectl output: %v\n%s", err, out)
		}
		objs = append(objs, o)
	}
	return objs
}

// object is a Kubernetes object as kubectl prints it; Spec is decoded by
// kind with decodeSpec.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"` // ConfigMap
	Spec yaml.Node         `yaml:"spec"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type deploymentSpec struct {
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot bool `yaml:"runAsNonRoot"`
				RunAsUser    int  `yaml:"runAsUser"`
			} `yaml:"securityContext"`
			Containers []struct {
				Name string   `yaml:"name"`
				Args []string `yaml:"args"`
				Env  []struct {
					Name string `yaml:"name"`
				} `yaml:"env"`
				Ports []struct {
					Name          string `yaml:"name"`
					ContainerPort int    `yaml:"containerPort"`
				} `yaml:"ports"`
				StartupProbe   *probe `yaml:"startupProbe"`
				LivenessProbe  *probe `yaml:"livenessProbe"`
				ReadinessProbe *probe `yaml:"readinessProbe"`
				Lifecycle      struct {
					PreStop *struct {
						Sleep *struct {
							Seconds int `yaml:"seconds"`
						} `yaml:"sleep"`
					} `yaml:"preStop"`
				} `yaml:"lifecycle"`
				SecurityContext struct {
					ReadOnlyRootFilesystem bool `yaml:"readOnlyRootFilesystem"`
				} `yaml:"securityContext"`
				VolumeMounts []struct {
					Name      string `yaml:"name"`
					MountPath string `yaml:"mountPath"`
				} `yaml:"volumeMounts"`
			} `yaml:"containers"`
			Volumes []struct {
				Name      string `yaml:"name"`
				ConfigMap *struct {
					Name string `yaml:"name"`
				} `yaml:"configMap"`
				EmptyDir *struct{} `yaml:"emptyDir"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type hpaSpec struct {
	ScaleTargetRef struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Name       string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	MinReplicas int `yaml:"minReplicas"`
	MaxReplicas int `yaml:"maxReplicas"`
	Metrics     []struct {
		Type string `yaml:"type"`
		Pods *struct {
			Metric struct {
				Name string `yaml:"name"`
			} `yaml:"metric"`
			Target struct {
				Type         string `yaml:"type"`
				AverageValue string `yaml:"averageValue"`
			} `yaml:"target"`
		} `yaml:"pods"`
	} `yaml:"metrics"`
}

type pdbSpec struct {
	MaxUnavailable *int `yaml:"maxUnavailable"`
	MinAvailable   *int `yaml:"minAvailable"`
	Selector       struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"`
	} `yaml:"ports"`
}

// one returns the only object of a kind and apiVersion, its spec decoded
// into spec.
func one(t *testing.T, objs []object, apiVersion, kind string, spec any) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s; want 1", len(found), kind)
	}
	o := found[0]
	if o.APIVersion != apiVersion {
		t.Fatalf("%s has apiVersion %s; want %s", kind, o.APIVersion, apiVersion)
	}
	if spec != nil {
		if err := o.Spec.Decode(spec); err != nil {
			t.Fatalf("%s spec: %v", kind, err)
		}
	}
	return o
}

// loadConfigMap loads the ConfigMap's spindle.yaml as `spindle serve
// --config` would, with the Deployment's SPINDLE_* variables set.
func loadConfigMap(t *testing.T, text string, environ []string) config.Config {
	t.Helper()
	file := filepath.Join(t.TempDir(), "spindle.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, environ)
	if err != nil {
		t.Fatalf("the ConfigMap's spindle.yaml does not load: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the ConfigMap's spindle.yaml does not validate: %v", err)
	}
	return cfg
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// The manifests go through kubectl, and what it would create fits the
// gateway: probes on the admin listener's /healthz and /readyz; a preStop
// and a termination grace period that cover the drain the ConfigMap
// configures; a PodDisruptionBudget, a Service and an autoscaling/v2 HPA
// on the connections metric, all selecting the Deployment's pods; a
// ConfigMap that Spindle's own loader accepts, with a Redis option that
// does too.
func TestKubernetesManifests(t *testing.T) {
	objs := kubectlDryRun(t)
	for _, o := range objs {
		t.Logf("kubectl would create %s %s/%s", o.APIVersion, o.Kind, o.Metadata.Name)
	}

	cm := one(t, objs, "v1", "ConfigMap", nil)
	var dep deploymentSpec
	depObj := one(t, objs, "apps/v1", "Deployment", &dep)
	pod := dep.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want the gateway alone", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The config file: --config names the ConfigMap key where it is mounted.
	if len(c.Args) != 2 || c.Args[0] != "--config" {
		t.Fatalf("container args %q; want --config FILE", c.Args)
	}
	mounted := ""
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name && path.Dir(c.Args[1]) == m.MountPath {
				mounted = cm.Data[path.Base(c.Args[1])]
			}
		}
	}
	if mounted == "" {
		t.Fatalf("--config %s is not a key of ConfigMap %s mounted at its folder", c.Args[1], cm.Metadata.Name)
	}
	var environ []string
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "SPINDLE_") {
			if !isSetting(e.Name) {
				t.Errorf("env %s is no Spindle setting", e.Name)
			}
			environ = append(environ, e.Name+"=from-the-secret")
		}
	}
	cfg := loadConfigMap(t, mounted, environ)

	// Ports: the container's named ports are the config's listeners.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["client"] != port(t, cfg.Listen) || ports["admin"] != port(t, cfg.AdminListen) {
		t.Errorf("container ports %v; the config listens on %s (client) and %s (admin)", ports, cfg.Listen, cfg.AdminListen)
	}
	if a := dep.Template.Metadata.Annotations; a["prometheus.io/port"] != strconv.Itoa(ports["admin"]) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v; want the admin port's /metrics", a)
	}

	// Probes.
	for _, p := range []struct {
		name  string
		probe *probe
		path  string
	}{{"startupProbe", c.StartupProbe, "/healthz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: missing, or not httpGet", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != "admin" {
			t.Errorf("%s: GET %s on port %s; want %s on the admin port", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port, p.path)
		}
	}

	// Drain: preStop sleeps while the endpoints go, then SIGTERM drains
	// within shutdown_grace_period; Kubernetes must not SIGKILL before.
	if c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Fatal("no preStop sleep: the pod would get SIGTERM while load balancers still send it clients")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	drain := cfg.ShutdownGracePeriod.D()
	if grace <= preStop+drain {
		t.Errorf("terminationGracePeriodSeconds %v <= preStop %v + shutdown_grace_period %v: SIGKILL could cut the drain", grace, preStop, drain)
	}
	if w := cfg.ShutdownReconnect.D(); w <= 0 || w >= drain*9/10 {
		t.Errorf("shutdown_reconnect_window %v must be positive and within the drain's 90%% of shutdown_grace_period %v", w, drain)
	}

	// Non-root as the image, with a writable folder for the captures.
	if uid := dockerUser(t); !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser != uid {
		t.Errorf("pod securityContext %+v; want runAsNonRoot with the image's uid %d", pod.SecurityContext, uid)
	}
	if c.SecurityContext.ReadOnlyRootFilesystem {
		writable := false
		for _, m := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.EmptyDir != nil && strings.HasPrefix(cfg.CaptureDir+"/", m.MountPath+"/") {
					writable = true
				}
			}
		}
		if !writable {
			t.Errorf("capture_dir %s is on the read-only root filesystem; put it on an emptyDir", cfg.CaptureDir)
		}
	}

	podLabels := dep.Template.Metadata.Labels
	if !selects(dep.Selector.MatchLabels, podLabels) {
		t.Errorf("Deployment selector %v does not select its pods %v", dep.Selector.MatchLabels, podLabels)
	}

	var pdb pdbSpec
	one(t, objs, "policy/v1", "PodDisruptionBudget", &pdb)
	if !selects(pdb.Selector.MatchLabels, podLabels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods %v", pdb.Selector.MatchLabels, podLabels)
	}
	if pdb.MaxUnavailable == nil || *pdb.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v; want 1: one pod's clients reconnect at a time", pdb.MaxUnavailable)
	}

	var svc serviceSpec
	one(t, objs, "v1", "Service", &svc)
	if !selects(svc.Selector, podLabels) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Selector, podLabels)
	}
	for _, p := range svc.Ports {
		if _, ok := ports[p.TargetPort]; !ok || p.TargetPort == "admin" {
			t.Errorf("Service port %s targets %q; want a container port other than admin (pprof)", p.Name, p.TargetPort)
		}
	}

	var hpa hpaSpec
	one(t, objs, "autoscaling/v2", "HorizontalPodAutoscaler", &hpa)
	if r := hpa.ScaleTargetRef; r.Kind != "Deployment" || r.Name != depObj.Metadata.Name || r.APIVersion != "apps/v1" {
		t.Errorf("HPA scales %+v; want the Deployment %s", r, depObj.Metadata.Name)
	}
	if hpa.MinReplicas < 2 || hpa.MaxReplicas < hpa.MinReplicas {
		t.Errorf("HPA replicas %d..%d; want at least 2 so the PDB lets one drain", hpa.MinReplicas, hpa.MaxReplicas)
	}
	scaled := false
	for _, m := range hpa.Metrics {
		if m.Type != "Pods" || m.Pods == nil || m.Pods.Metric.Name != adapterMetric(t) {
			continue
		}
		v, err := strconv.Atoi(m.Pods.Target.AverageValue)
		if m.Pods.Target.Type != "AverageValue" || err != nil || v <= 0 || v >= cfg.EffectiveMaxConnections() {
			t.Errorf("HPA target %+v; want an AverageValue under max_connections %d", m.Pods.Target, cfg.EffectiveMaxConnections())
		}
		scaled = true
	}
	if !scaled {
		t.Errorf("HPA metrics %+v: none is the Pods metric the prometheus-adapter rule serves (%s)", hpa.Metrics, adapterMetric(t))
	}

	// The Redis option: the ConfigMap's commented Redis block, uncommented,
	// is a valid config for several replicas; its password variable is a
	// setting.
	redisText := regexp.MustCompile(`(?m)^(\s*)# ((broker|redis_[a-z_]+):)`).ReplaceAllString(mounted, "$1$2")
	if redisText == mounted {
		t.Fatal("the ConfigMap has no commented Redis option (# broker: redis, # redis_address: …)")
	}
	rc := loadConfigMap(t, redisText, environ)
	if rc.Broker != "redis" || rc.RedisAddress == config.Default().RedisAddress {
		t.Errorf("the Redis option gives broker %q at %q; want redis at a cluster address", rc.Broker, rc.RedisAddress)
	}
	if !fileContains(t, "kubernetes/deployment.yaml", "SPINDLE_REDIS_PASSWORD") || !isSetting("SPINDLE_REDIS_PASSWORD") {
		t.Error("the Deployment does not show where SPINDLE_REDIS_PASSWORD comes from")
	}
}

// isSetting reports whether an environment variable is one Spindle reads.
func isSetting(env string) bool {
	return slices.ContainsFunc(config.Settings(), func(s config.Setting) bool { return s.Env() == env })
}

// selects reports whether a matchLabels selector selects labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// dockerUser is the numeric uid the image runs as.
func dockerUser(t *testing.T) int {
	t.Helper()
	stages := parseDockerfile(t, "Dockerfile")
	users := stages[len(stages)-1].find("USER")
	if len(users) == 0 {
		t.Fatal("the final stage has no USER: it would run as root")
	}
	uid, _, _ := strings.Cut(users[len(users)-1].args, ":")
	n, err := strconv.Atoi(uid)
	if err != nil {
		t.Fatalf("USER %q is not numeric", users[len(users)-1].args)
	}
	return n
}

// adapterMetric is the custom metric the prometheus-adapter rule serves.
func adapterMetric(t *testing.T) string {
	t.Helper()
	var v struct {
		Rules struct {
			Custom []struct {
				SeriesQuery string `yaml:"seriesQuery"`
				Name        struct {
					As string `yaml:"as"`
				} `yaml:"name"`
			} `yaml:"custom"`
		} `yaml:"rules"`
	}
	data, err := os.ReadFile("prometheus/prometheus-adapter-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("prometheus-adapter-values.yaml: %v", err)
	}
	if len(v.Rules.Custom) != 1 || v.Rules.Custom[0].Name.As == "" {
		t.Fatalf("prometheus-adapter-values.yaml: want one custom rule with name.as, got %+v", v.Rules.Custom)
	}
	return v.Rules.Custom[0].Name.As
}
