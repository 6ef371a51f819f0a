package server_test

import (
	"strings"
	"testing"

	"celadon.io/celadon/controllers"
	"celadon.io/celadon/engine"
	"celadon.io/celadon/server"
)

func TestNewServerChecksManageWebhooks(t *testing.T) {
	for _, o := range []server.Options{
		{ManageWebhooks: true},
		{ManageWebhooks: true, WebhookURL: "https://x", WebhookService: &controllers.ServiceRef{Namespace: "a", Name: "b"}},
	} {
		o.PoliciesDir = t.TempDir()
		o.Registry = engine.NewRegistry()
		if _, err := server.NewServer(o); err == nil || !strings.Contains(err.Error(), "managing the webhook configurations") {
			t.Errorf("server.NewServer(%+v): %v, want an error about managing the webhook configurations", o, err)
		}
	}
}
