package sandbox

import "fmt"

// backendFiles is a stand-in for tractstack-go: one module with
// cmd/tractstack-go that serves GET /api/v1/health and reports its version,
// and the templates directory the whitelist script reads.
func backendFiles(version string, healthy bool) map[string]string {
	return map[string]string{
		"go.mod": "module tractstack-go\n\ngo 1.22\n",
		"cmd/tractstack-go/main.go": `package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	port := flag.String("port", os.Getenv("PORT"), "port to listen on (127.0.0.1)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(Version)
		return
	}
	if *port == "" {
		*port = "10000"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(map[string]any{
			"healthy": Healthy,
			"version": Version,
			"tenant":  r.Header.Get("X-Tenant-ID"),
		})
	})
	mux.HandleFunc("/api/v1/version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, Version)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+*port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Println("tractstack-go", Version, "listening on", ln.Addr())
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
`,
		"cmd/tractstack-go/version.go":              versionGo(version, healthy),
		"internal/presentation/templates/base.html": "<div class=\"p-4 text-lg\"></div>\n",
	}
}

func versionGo(version string, healthy bool) string {
	return fmt.Sprintf("package main\n\n// Version is what the backend reports.\nconst Version = %q\n\n// Healthy is what its health check answers.\nconst Healthy = %t\n", version, healthy)
}

// frontendFiles is a stand-in for my-tractstack: a package with no
// dependencies whose `build` script is plain Node and writes
// dist/server/entry.mjs, an HTTP server on $PORT that answers with the
// version it was built from (as Astro's node adapter would serve a page).
func frontendFiles(version string) map[string]string {
	return map[string]string{
		"package.json": `{
  "name": "my-tractstack",
  "version": "0.0.0",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "node build.mjs"
  }
}
`,
		"build.mjs": `import fs from "node:fs";

let delay = 0;
if (fs.existsSync("src/build-delay-ms")) {
  delay = parseInt(fs.readFileSync("src/build-delay-ms", "utf8"), 10) || 0;
}
const version = fs.readFileSync("src/version.txt", "utf8").trim();
console.log("building frontend " + version);
setTimeout(() => {
  if (fs.existsSync("src/broken")) {
    console.error("build failed: src/broken exists");
    process.exit(1);
  }
  fs.rmSync("dist", { recursive: true, force: true });
  fs.mkdirSync("dist/server", { recursive: true });
  fs.mkdirSync("dist/client", { recursive: true });
  fs.writeFileSync("dist/client/index.html", "<p class=\"text-sm\">" + version + "</p>\n");
  fs.writeFileSync("dist/server/entry.mjs", ` + "`" + `import http from "node:http";
const version = ${JSON.stringify(version)};
const port = parseInt(process.env.PORT || "4321", 10);
http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain" });
  res.end("frontend " + version + "\\n");
}).listen(port, process.env.HOST || "127.0.0.1", () => {
  console.log("frontend " + version + " listening on " + port);
});
` + "`" + `);
  console.log("built dist/server/entry.mjs");
}, delay);
`,
		"src/version.txt": version + "\n",
		".gitignore":      "node_modules/\ndist/\n",
	}
}
