package queue

import (
	"errors"
	"strings"
	"testing"
)

func sites(names ...string) SiteChecker {
	return func(s string) bool {
		for _, n := range names {
			if n == s {
				return true
			}
		}
		return false
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []Request
		warnings int
	}{
		{"seed format", "type=main,tenant=default,command=build", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"trailing newline", "type=main,tenant=default,command=build\n", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"CRLF and BOM", "\ufefftype=prod,command=restart\r\n", []Request{{Type: "prod", Tenant: "default", Command: "restart", Line: 1}}, 0},
		{"blank lines and spaces", "\n\n  type = multi , tenant = acme-co , command = rollback \n\n", []Request{{Type: "multi", Tenant: "acme-co", Command: "rollback", Line: 3}}, 0},
		{"tenant defaults", "type=main,command=build", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"empty tenant defaults", "type=main,tenant=,command=build", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"dedicated", "type=dedicated,site=acme,command=build", []Request{{Type: "dedicated", Site: "acme", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"unknown key warns", "type=main,command=build,colour=blue", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 1},
		{"site on main ignored with warning", "type=main,site=acme,command=build", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 1},
		{"trailing comma", "type=main,command=build,", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"upper-case keys", "TYPE=main,Command=build", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 1}}, 0},
		{"several lines", "type=main,tenant=aaa,command=build\ntype=dedicated,site=acme,command=restart\n",
			[]Request{{Type: "main", Tenant: "aaa", Command: "build", Line: 1}, {Type: "dedicated", Site: "acme", Tenant: "default", Command: "restart", Line: 2}}, 0},
		{"header CSV", "type,tenant,site,command\nmain,default,,build\ndedicated,,acme,build\n",
			[]Request{{Type: "main", Tenant: "default", Command: "build", Line: 2}, {Type: "dedicated", Site: "acme", Tenant: "default", Command: "build", Line: 3}}, 0},
		{"header CSV with BOM, CRLF, blank lines", "\ufefftype,tenant,command\r\n\r\nmain,tenant-a,build\r\n\r\n",
			[]Request{{Type: "main", Tenant: "tenant-a", Command: "build", Line: 3}}, 0},
		{"header CSV column order and unknown column", "command,extra,type\nbuild,x,main\n",
			[]Request{{Type: "main", Tenant: "default", Command: "build", Line: 2}}, 1},
		{"header CSV quoted", "type,command\n\"main\",\"build\"\n", []Request{{Type: "main", Tenant: "default", Command: "build", Line: 2}}, 0},
		{"retry_of", "type=main,command=build,retry_of=01ARZ3NDEKTSV4RRFFQ69G5FAV", []Request{{Type: "main", Tenant: "default", Command: "build", RetryOf: "01ARZ3NDEKTSV4RRFFQ69G5FAV", Line: 1}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := Parse("build-1.csv", []byte(tt.in), sites("acme"))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d requests %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("request %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			if len(warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", warnings, tt.warnings)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	long := strings.Repeat("a", MaxTriggerSize+1)
	tests := []struct {
		name string
		in   string
		want string // substring of the reason, which always names the file
	}{
		{"empty", "", "no trigger line"},
		{"blank", "\n \r\n", "no trigger line"},
		{"missing type", "tenant=default,command=build", "line 1: type is missing"},
		{"bad type", "type=staging,command=build", `line 1: type "staging" is not one of main, prod, multi, dedicated`},
		{"bad type case", "type=Main,command=build", `type "Main" is not one of`},
		{"missing command", "type=main", "line 1: command is missing"},
		{"bad command", "type=main,command=deploy", `command "deploy" is not one of build, restart, rollback`},
		{"tenant too short", "type=main,tenant=ab,command=build", `tenant "ab" does not match`},
		{"tenant too long", "type=main,tenant=abcdefghijklm,command=build", `tenant "abcdefghijklm" does not match`},
		{"tenant upper case", "type=main,tenant=Acme,command=build", `tenant "Acme" does not match`},
		{"tenant path", "type=main,tenant=../etc,command=build", `tenant "../etc" does not match`},
		{"dedicated without site", "type=dedicated,command=build", "site is required for type dedicated"},
		{"site traversal", "type=dedicated,site=../../root,command=build", `site "../../root" does not match`},
		{"site with slash", "type=dedicated,site=a/b/c,command=build", `site "a/b/c" does not match`},
		{"site shell", "type=dedicated,site=$(rm),command=build", `site "$(rm)" does not match`},
		{"site unknown", "type=dedicated,site=nosuch,command=build", `site "nosuch" does not exist`},
		{"not a pair", "type=main,build", `"build" is not a key=value pair`},
		{"duplicate key", "type=main,type=prod,command=build", `key "type" is given twice`},
		{"second line bad", "type=main,command=build\ntype=main,command=nope\n", "line 2: command \"nope\""},
		{"too large", long, "more than the 65536"},
		{"NUL", "type=main,command=build\x00", "NUL"},
		{"not UTF-8", "type=main,command=build\xff", "not UTF-8"},
		{"header only", "type,tenant,command\n", "header but no trigger rows"},
		{"header without type", "tenant,command\ndefault,build\n", `no "type" column`},
		{"header bad value", "type,command\nmain,build\nmain,explode\n", `line 3: command "explode"`},
		{"header duplicate column", "type,type,command\nmain,main,build\n", `column "type" is given twice`},
		{"header CSV bare quote", "type,command\nma\"in,build\n", "not valid CSV"},
		{"bad retry_of", "type=main,command=build,retry_of=x", `retry_of "x" is not a job id`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("build-7.csv", []byte(tt.in), sites("acme"))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			var p *Problem
			if !errors.As(err, &p) {
				t.Fatalf("error %T is not a *Problem", err)
			}
			if !strings.HasPrefix(err.Error(), "build-7.csv") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("reason = %q, want it to start with the file and contain %q", err, tt.want)
			}
		})
	}
}

func TestTarget(t *testing.T) {
	for _, tt := range []struct {
		r    Request
		want string
	}{
		{Request{Type: "main"}, "main"},
		{Request{Type: "prod"}, "main"},
		{Request{Type: "multi"}, "main"},
		{Request{Type: "dedicated", Site: "acme"}, "dedicated:acme"},
	} {
		if got := tt.r.Target(); got != tt.want {
			t.Errorf("%+v.Target() = %q, want %q", tt.r, got, tt.want)
		}
		if got := Site(tt.want); (got != "") != (tt.r.Type == "dedicated") || (got != "" && got != tt.r.Site) {
			t.Errorf("Site(%q) = %q", tt.want, got)
		}
	}
}

func TestTriggerLineRoundTrips(t *testing.T) {
	line := TriggerLine("dedicated", "ten-1", "acme", "rollback", "")
	reqs, _, err := Parse("x", []byte(line), sites("acme"))
	if err != nil || len(reqs) != 1 || reqs[0].Site != "acme" || reqs[0].Tenant != "ten-1" || reqs[0].Command != "rollback" {
		t.Fatalf("Parse(%q) = %+v, %v", line, reqs, err)
	}
}

func TestIsTriggerName(t *testing.T) {
	for name, want := range map[string]bool{
		"build-01ARZ3NDEKTSV4RRFFQ69G5FAV.csv": true, "build-1700000000.csv": true, "build-.csv": true,
		"build-1.csv.tmp": false, ".build-1.csv.tmp-1": false, "rebuild-1.csv": false, "build-1.CSV": false, "notes.txt": false,
	} {
		if got := IsTriggerName(name); got != want {
			t.Errorf("IsTriggerName(%q) = %v, want %v", name, got, want)
		}
	}
}
