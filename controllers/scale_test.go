package controllers_test

import (
	"fmt"
	"strings"
	"testing"

	"celadon.io/celadon/controllers"
)

// TestNarrowingManyPolicies generates the configurations of 1,000
// policies with conditions, as a careless operator's set might be: past
// MaxMatchConditionShares the webhook has no matchCondition, which the API
// server would take seconds to check, and says why; at the bound it has one
// that compiles.
func TestNarrowingManyPolicies(t *testing.T) {
	var docs []string
	for i := range 1000 {
		docs = append(docs, policyDoc(fmt.Sprintf("p%d", i), "deny", "Fail",
			fmt.Sprintf("    conditions:\n    - {expression: \"object.metadata.?labels[?'team'].orValue('') == 'team-%d'\"}\n", i), ""))
	}
	snap := compileSet(t, docs...)
	_, vwc := generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
	if mc := vwc.Webhooks[0].MatchConditions; len(mc) != 0 {
		t.Errorf("a matchCondition of %d bytes, want none past %d policies", len(mc[0].Expression), controllers.MaxMatchConditionShares)
	}
	pds, err := controllers.Pushdown(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pds[0].Reason, "more than the") || pds[0].Expression != "true" {
		t.Errorf("pushdown: %+v, want it to say why there is no matchCondition", pds[0])
	}

	snap = compileSet(t, docs[:controllers.MaxMatchConditionShares]...)
	_, vwc = generate(t, snap, controllers.ConfigOptions{Service: &controllers.ServiceRef{Namespace: "celadon", Name: "celadon"}})
	if mc := vwc.Webhooks[0].MatchConditions; len(mc) != 1 {
		t.Errorf("%d policies: matchConditions %d, want 1", controllers.MaxMatchConditionShares, len(mc))
	}
}
