package queue

import (
	"strings"
	"testing"
)

// FuzzParse checks that no input makes the parser panic, and that what it
// accepts is always safe to use: ids match the pattern, types and commands
// are known, and a dedicated request names an existing site.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"type=main,tenant=default,command=build",
		"type=dedicated,site=acme,command=build\n",
		"\ufefftype,tenant,site,command\r\nmain,default,,build\r\n",
		"type,command\n\"ma\"\"in\",build\n",
		"type=main,,,command=restart,x=y\n\n",
		"type=prod,tenant=,command=rollback,retry_of=01ARZ3NDEKTSV4RRFFQ69G5FAV",
		"", "\n", "=", "type", "type,\n,", "a=b=c", "type=dedicated,site=../x,command=build",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		reqs, _, err := Parse("build-f.csv", data, sites("acme"))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "build-f.csv") {
				t.Fatalf("reason %q does not name the file", err)
			}
			return
		}
		if len(reqs) == 0 {
			t.Fatal("accepted with no requests")
		}
		for _, r := range reqs {
			if !ValidID(r.Tenant) {
				t.Fatalf("accepted tenant %q", r.Tenant)
			}
			if !strings.Contains(" main prod multi dedicated ", " "+r.Type+" ") {
				t.Fatalf("accepted type %q", r.Type)
			}
			if !strings.Contains(" build restart rollback ", " "+r.Command+" ") {
				t.Fatalf("accepted command %q", r.Command)
			}
			if (r.Type == "dedicated") != (r.Site != "") || (r.Site != "" && r.Site != "acme") {
				t.Fatalf("accepted site %q for type %q", r.Site, r.Type)
			}
		}
	})
}
