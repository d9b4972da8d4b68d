package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/queue"
)

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"slack://hook:WNA3PBYV6-F20DUQND3RQ-Webc4MAvoacrpPakR8phF0zi@webhook", "slack://***@webhook"},
		{"discord://tokentoken@123456789", "discord://***@123456789"},
		{"telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@ops", "telegram://***@telegram?***"},
		{"ntfy://ntfy.sh/secret-topic", "ntfy://ntfy.sh/***"},
		{"smtp://user:pa55word@mail.example.com:587/?from=c@example.com&to=ops@example.com", "smtp://***@mail.example.com:587?***"},
		{"generic://127.0.0.1:8080/hook?template=json&disabletls=yes", "generic://127.0.0.1:8080/***?***"},
		{"::not a url", "(an unparsable URL)"},
	} {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestScrub(t *testing.T) {
	raw := "smtp://user:pa55word@mail.example.com:587/?from=c@example.com&to=ops@example.com"
	got := Scrub("dial "+raw+": auth failed for user with pa55word", raw)
	for _, secret := range []string{"pa55word", "ops@example.com", raw} {
		if strings.Contains(got, secret) {
			t.Fatalf("Scrub left %q in %q", secret, got)
		}
	}
	raw = "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@ops"
	if got := Scrub("bad token 110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", raw); strings.Contains(got, "AAHdq") {
		t.Fatalf("Scrub left the token: %q", got)
	}
}

func TestWanted(t *testing.T) {
	for _, c := range []struct {
		name  string
		job   queue.Job
		on    string
		wants bool
	}{
		{"a failure", queue.Job{State: queue.Failed, Command: "build"}, OnFailure, true},
		{"a rejected trigger", queue.Job{State: queue.Rejected}, OnFailure, true},
		{"the rollback command", queue.Job{State: queue.Succeeded, Command: "rollback"}, OnFailure, true},
		{"a success", queue.Job{State: queue.Succeeded, Command: "build"}, OnFailure, false},
		{"a success, all asked", queue.Job{State: queue.Succeeded, Command: "build"}, OnAll, true},
		{"a running job", queue.Job{State: queue.Running, Command: "build"}, OnAll, false},
	} {
		if got := Wanted(c.job, c.on); got != c.wants {
			t.Errorf("%s: Wanted = %t, want %t", c.name, got, c.wants)
		}
	}
}

func TestMessage(t *testing.T) {
	start := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	end := start.Add(42 * time.Second)
	j := queue.Job{ID: "01JABC", State: queue.Failed, Target: "main", Command: "build", Tenants: []string{"default"},
		StartedAt: &start, FinishedAt: &end, Error: "backend unhealthy; rolled back to 4f9c", Warnings: []string{"w1"}}
	title, text := Message(j, "web1", true)
	if title != "concierge on web1: build of main failed and was rolled back" {
		t.Fatalf("title %q", title)
	}
	for _, want := range []string{"job 01JABC", "tenants default", "took 42s", "error: backend unhealthy; rolled back to 4f9c", "warning: w1", "concierge logs 01JABC"} {
		if !strings.Contains(text, want) {
			t.Fatalf("text lacks %q:\n%s", want, text)
		}
	}
}

func TestSendToAWebhook(t *testing.T) {
	got := make(chan map[string]string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &body); err != nil {
			t.Errorf("body %q: %v", data, err)
		}
		got <- body
	}))
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "generic://", 1) + "/hook?template=json&disabletls=yes"
	n, err := New(Config{URLs: []string{u}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if errs := n.Send(context.Background(), "the title", "the text"); len(errs) != 0 {
		t.Fatalf("send: %v", errs)
	}
	body := <-got
	if body["title"] != "the title" || body["message"] != "the text" {
		t.Fatalf("the webhook got %v", body)
	}
}

func TestSendGivesUpAtTheTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release) // before Close, which waits for the handler
	u := strings.Replace(srv.URL, "http://", "generic://", 1) + "/secret-path?template=json&disabletls=yes"
	n, err := New(Config{URLs: []string{u}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	errs := n.Send(context.Background(), "t", "x")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "timed out") {
		t.Fatalf("errors %v; want one timeout", errs)
	}
	if strings.Contains(errs[0].Error(), "secret-path") {
		t.Fatalf("the error shows the URL's path: %v", errs[0])
	}
}

func TestNewRefusesABadURLWithoutShowingIt(t *testing.T) {
	_, err := New(Config{URLs: []string{"nosuchservice://user:hunter2hunter2@example.com/x"}})
	if err == nil || strings.Contains(err.Error(), "hunter2hunter2") {
		t.Fatalf("error %v", err)
	}
	if _, err := New(Config{URLs: []string{"generic://example.com/x"}, On: "sometimes"}); err == nil {
		t.Fatal("a bad CONCIERGE_NOTIFY_ON was accepted")
	}
	if n, err := New(Config{}); n != nil || err != nil {
		t.Fatalf("no URLs: %v %v", n, err)
	}
}

// The README's examples are accepted as written (nothing is sent).
func TestReadmeExamplesParse(t *testing.T) {
	for _, u := range []string{
		"slack://hook:AAAAAAAAA-BBBBBBBBB-CCCCCCCCCCCCCCCCCCCCCCCC@webhook",
		"discord://W3dE2OZz4C13_4z_uHfDOoC7BqTW288s-z1ykqI0iJnY_HjRqMGO8Sc7YDqvf_KVKjhJ@693853386302554172",
		"ntfy://ntfy.sh/my-secret-topic",
		"telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@ops",
		"generic://hooks.example.com/concierge?template=json",
		"smtp://alerts%40example.com:APP_PASSWORD@smtp.example.com:587/?fromaddress=alerts@example.com&toaddresses=ops@example.com&subject=concierge",
		"generic://127.0.0.1:8080/hook?template=json&disabletls=yes",
	} {
		if _, err := New(Config{URLs: []string{u}}); err != nil {
			t.Errorf("%s: %v", Redact(u), err)
		}
	}
}
