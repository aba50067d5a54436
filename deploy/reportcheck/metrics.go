package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// urls is the -metrics flag: the metrics endpoints of the coordinators.
type urls []string

func (u *urls) String() string { return strings.Join(*u, ",") }

func (u *urls) Set(v string) error {
	if !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
		v = "http://" + v
	}
	if !strings.HasSuffix(v, "/metrics") {
		v = strings.TrimSuffix(v, "/") + "/metrics"
	}
	*u = append(*u, v)
	return nil
}

// scrapeTimeout bounds one scrape.
const scrapeTimeout = 10 * time.Second

// checkMetrics scrapes every coordinator at us and checks that, summed
// over them, the sagas they started and finished by type and status are
// those of the report: the coordinators must have run only this report's
// sagas, none of them restarted. It returns the problems found.
func checkMetrics(ctx context.Context, r *report, us []string) []string {
	started := map[string]float64{}
	finished := map[[2]string]float64{}
	var problems []string
	for _, u := range us {
		if err := scrape(ctx, u, started, finished); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return problems
	}
	for typ, counts := range r.Sagas {
		total := 0
		for st, n := range counts {
			total += n
			if got := finished[[2]string{typ, st}]; got != float64(n) {
				problems = append(problems, fmt.Sprintf("metrics: natsaga_sagas_finished_total{saga=%q,status=%q} is %v, the report says %d", typ, st, got, n))
			}
		}
		if got := started[typ]; got != float64(total) {
			problems = append(problems, fmt.Sprintf("metrics: natsaga_sagas_started_total{saga=%q} is %v, the report says %d", typ, got, total))
		}
	}
	return problems
}

// scrape adds the saga counters of the Prometheus text at u to started
// and finished.
func scrape(ctx context.Context, u string, started map[string]float64, finished map[[2]string]float64) error {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("metrics %s: %w", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("metrics %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metrics %s: %s", u, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return fmt.Errorf("metrics %s: %w", u, err)
	}
	label := func(ls map[string]string, name string) string { return ls[name] }
	for _, m := range fams["natsaga_sagas_started_total"].GetMetric() {
		ls := map[string]string{}
		for _, l := range m.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		started[label(ls, "saga")] += m.GetCounter().GetValue()
	}
	for _, m := range fams["natsaga_sagas_finished_total"].GetMetric() {
		ls := map[string]string{}
		for _, l := range m.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		finished[[2]string{label(ls, "saga"), label(ls, "status")}] += m.GetCounter().GetValue()
	}
	return nil
}
