package deploy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atkafka/atkafka/metrics"
)

const dashboardPath = "deploy/grafana/atkafka-dashboard.json"

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int     `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	Datasource *source `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string  `json:"refId"`
		Expr       string  `json:"expr"`
		Datasource *source `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // inside collapsed rows
}

type source struct {
	UID string `json:"uid"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// queries returns every PromQL expression in the dashboard, keyed by where it is, including the metric of each
// label_values() variable.
func queries(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	q := map[string]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			q[p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Fatalf("variable %s: only label_values(metric, label) queries are checked, got %q", v.Name, v.Definition)
		}
		q["$"+v.Name] = m[1]
	}
	return q
}

// promFuncs are the PromQL functions and aggregations the dashboard may call; anything else followed by "(" is a
// typo, and any other identifier a metric name.
var promFuncs = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "topk": true, "bottomk": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "deriv": true, "histogram_quantile": true,
	"time": true, "abs": true, "clamp_min": true, "clamp_max": true, "label_replace": true,
	"max_over_time": true, "min_over_time": true, "avg_over_time": true, "vector": true, "scalar": true,
}

var promKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGroupings = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
)

// metricNames returns the metric names an expression selects, or an error naming an unknown function. It is not
// a PromQL parser, but covers what dashboards write: selectors, functions, aggregations with by/without,
// arithmetic and ranges.
func metricNames(expr string) ([]string, error) {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGroupings.ReplaceAllString(e, " ")
	var names []string
	for _, m := range promIdent.FindAllString(e, -1) {
		name := strings.TrimRight(m, " \t(")
		switch {
		case strings.HasSuffix(m, "("):
			if !promFuncs[name] {
				return nil, errors.New("unknown function " + name)
			}
		case promKeywords[name]:
		default:
			names = append(names, name)
		}
	}
	return names, nil
}

func TestMetricNames(t *testing.T) {
	got, err := metricNames(`histogram_quantile(0.99, sum by (le, source) (rate(a_bucket{x=~"$i",y="by(z)"}[$__rate_interval]))) / on(source) b - time()`)
	if err != nil || strings.Join(got, ",") != "a_bucket,b" {
		t.Fatalf("metricNames = %v, %v", got, err)
	}
	if _, err := metricNames(`sume(rate(a[5m]))`); err == nil {
		t.Fatal("a misspelt function passed")
	}
}

// registered reports whether metrics.Registry has a metric called name, by trying to register another one under
// that name: the registry refuses exactly when the name is taken. Vecs without children and the Go and process
// collectors are covered, which gathering would miss.
func registered(name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "deploy test probe"})
	if err := metrics.Registry.Register(probe); err != nil {
		return true
	}
	metrics.Registry.Unregister(probe)
	return false
}

// exists accepts a metric or, for histograms and summaries, one of its series (_bucket, _sum, _count).
func exists(name string) bool {
	if registered(name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && registered(base) {
			return true
		}
	}
	return false
}

func TestDashboardQueriesNameExistingMetrics(t *testing.T) {
	if registered("atkafka_no_such_metric") {
		t.Fatal("the registration probe accepts anything")
	}
	used := map[string]bool{}
	for where, expr := range queries(t, loadDashboard(t)) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v in %s", where, err, expr)
		}
		if len(names) == 0 && !strings.Contains(expr, "time()") {
			t.Errorf("%s: no metric in %s", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !exists(n) {
				t.Errorf("%s: %s is not a metric in metrics.Registry (%s)", where, n, expr)
			}
		}
	}

	// And the other way round: every atkafka metric has a panel, so a new metric is not forgotten.
	src, err := os.ReadFile(filepath.Join(root, "metrics", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	declared := regexp.MustCompile(`(?:counterVec|gaugeVec|histogramVec)\("([a-z0-9_]+)"`).FindAllSubmatch(src, -1)
	if len(declared) < 10 {
		t.Fatalf("found %d metric declarations in metrics.go: did its style change?", len(declared))
	}
	for _, m := range declared {
		name := "atkafka_" + string(m[1])
		if !used[name] && !used[name+"_bucket"] && !used[name+"_count"] {
			t.Errorf("%s has no panel in the dashboard", name)
		}
	}
}

func TestDashboardLayout(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid (stable links) and a title")
	}
	ids := map[int]bool{}
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside Grafana's 24 columns", p.Title, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the $datasource variable", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: missing or repeated refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: %s ignores the $instance variable", p.Title, tg.Expr)
			}
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}
