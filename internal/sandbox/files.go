package sandbox

import (
	"fmt"
	"strings"
)

// backendFiles is a stand-in for tractstack-go: one module with
// cmd/tractstack-go that serves GET /api/v1/health with the real backend's
// bodies and reports its version, and the templates directory the
// whitelist script reads. Its tenants are all active unless the file named
// by SANDBOX_TENANTS_FILE (in the unit's environment) says otherwise (see
// WriteTenants); a backend built unhealthy answers 503 for every tenant. On
// a busy port it runs on without listening, as the real one does. Like the
// real backend it serves a server-sent-event stream (/api/v1/auth/sse) that
// never ends by itself, and on SIGTERM closes its listener at once, waits
// up to 30 s for open requests, then closes its "tenant manager" and exits.
func backendFiles(version string, healthy bool) map[string]string {
	return map[string]string{
		"go.mod": "module tractstack-go\n\ngo 1.22\n",
		"cmd/tractstack-go/main.go": `package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// tenants reads the file named by SANDBOX_TENANTS_FILE, when set and
// present: a line "single" or "multi" (the backend's mode), then lines
// "tenant=active|inactive|reserved". ok is false without one.
func tenants() (mode string, states map[string]string, ok bool) {
	name := os.Getenv("SANDBOX_TENANTS_FILE")
	if name == "" {
		return "", nil, false
	}
	f, err := os.Open(name)
	if err != nil {
		return "", nil, false
	}
	defer f.Close()
	states = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, found := strings.Cut(line, "="); found {
			states[k] = v
		} else if line != "" {
			mode = line
		}
	}
	return mode, states, true
}

// health answers as the TractStack backend's GET /api/v1/health does.
func health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	tenant := r.Header.Get("X-Tenant-ID")
	if tenant == "" {
		tenant = "default"
	}
	reply := func(status int, body map[string]any) {
		body["version"] = Version
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}
	unavailable := map[string]any{"status": "error", "healthy": false, "error": "tenant not available"}
	if !Healthy {
		reply(http.StatusServiceUnavailable, unavailable)
		return
	}
	mode, states, ok := tenants()
	if !ok {
		// No tenant registry configured: every tenant asked is active.
		reply(http.StatusOK, map[string]any{"status": "ok", "healthy": true, "tenantId": tenant})
		return
	}
	if mode == "single" {
		tenant = "default" // a single-tenant backend answers for its default tenant
	}
	state, known := states[tenant]
	switch {
	case !known:
		reply(http.StatusNotFound, map[string]any{"error": "tenant not found"})
	case state == "active":
		reply(http.StatusOK, map[string]any{"status": "ok", "healthy": true, "tenantId": tenant})
	case state == "inactive" && tenant == "default":
		reply(http.StatusOK, map[string]any{"needsSetup": true})
	default:
		reply(http.StatusServiceUnavailable, unavailable)
	}
}

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
	mux.HandleFunc("/api/v1/health", health)
	mux.HandleFunc("/api/v1/version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, Version)
	})
	// One stream per visitor with a page open; it ends only when the
	// visitor goes.
	mux.HandleFunc("/api/v1/auth/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl, _ := w.(http.Flusher)
		fmt.Fprintf(w, "event: hello\ndata: %s\n\n", Version)
		if fl != nil {
			fl.Flush()
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				fmt.Fprint(w, ": ping\n\n")
				if fl != nil {
					fl.Flush()
				}
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+*port)
	if err != nil {
		// As the real backend: a busy port is logged, and the process
		// runs on without listening.
		fmt.Fprintln(os.Stderr, "listen:", err)
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		return
	}
	fmt.Println("tractstack-go", Version, "listening on", ln.Addr())
	srv := &http.Server{Handler: mux}
	stopped := make(chan struct{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		// Shutdown closes the listener at once, then waits for open
		// requests, which streams never stop being.
		fmt.Println("shutting down: waiting up to 30s for open requests")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			fmt.Println("shutdown:", err)
		}
		fmt.Println("closing tenant manager")
		close(stopped)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	<-stopped
	fmt.Println("stopped")
}
`,
		"cmd/tractstack-go/version.go":              versionGo(version, healthy),
		"internal/presentation/templates/base.html": "<div class=\"p-4 text-lg\"></div>\n",
	}
}

func versionGo(version string, healthy bool) string {
	return fmt.Sprintf("package main\n\n// Version is what the backend reports.\nconst Version = %q\n\n// Healthy is what its health check answers.\nconst Healthy = %t\n", version, healthy)
}

// frontendFiles is a stand-in for my-tractstack: a package whose `build`
// script is plain Node and writes dist/server/entry.mjs, an HTTP server on
// $PORT that answers / with the version it was built from (as Astro's node
// adapter would serve a page), /p/<n> from a page module it imports only
// on first request (as Astro loads page chunks lazily), and /files/<name>
// from dist/client (where the build copies public/), found relative to
// the entry's real path as Astro finds it. The server imports the package
// "greeting", a local dependency at the absolute path greeting that pnpm
// installs without a
// registry (see greetingFiles), so a server that cannot resolve its
// node_modules/ does not start. It also serves the files of dist/client at
// their own paths, as Astro's node adapter does (the build writes one
// under _astro/). src/mode.txt, when present, changes how it answers its
// pages, as a real TractStack frontend can: "hang" never answers them (a
// catch-all route whose module throws as it loads), "maint" redirects them
// to /maint (the backend is not answering the frontend); files still
// answer.
func frontendFiles(version, greeting string) map[string]string {
	return map[string]string{
		"package.json": `{
  "name": "my-tractstack",
  "version": "0.0.0",
  "private": true,
  "type": "module",
  "dependencies": {
    "greeting": "file:` + greeting + `"
  },
  "scripts": {
    "build": "node build.mjs"
  }
}
`,
		"public/robots.txt": "User-agent: *\n",
		"build.mjs": `import fs from "node:fs";

let delay = 0;
if (fs.existsSync("src/build-delay-ms")) {
  delay = parseInt(fs.readFileSync("src/build-delay-ms", "utf8"), 10) || 0;
}
const version = fs.readFileSync("src/version.txt", "utf8").trim();
const mode = fs.existsSync("src/mode.txt") ? fs.readFileSync("src/mode.txt", "utf8").trim() : "";
console.log("building frontend " + version + (mode ? " (" + mode + ")" : ""));
// As Astro does: the output directory is emptied when the build starts.
fs.rmSync("dist", { recursive: true, force: true });
setTimeout(() => {
  if (fs.existsSync("src/broken")) {
    console.error("build failed: src/broken exists");
    process.exit(1);
  }
  fs.mkdirSync("dist/server/pages", { recursive: true });
  fs.mkdirSync("dist/client/_astro", { recursive: true });
  fs.writeFileSync("dist/client/_astro/page." + version.replace(/[^A-Za-z0-9]/g, "") + ".css", "p{margin:0}\n");
  if (fs.existsSync("public")) {
    fs.cpSync("public", "dist/client", { recursive: true });
  }
  fs.writeFileSync("dist/client/index.html", "<p class=\"text-sm\">" + version + "</p>\n");
  for (let n = 1; n <= 5; n++) {
    fs.writeFileSync("dist/server/pages/page-" + n + ".mjs", "export const body = " + JSON.stringify("page " + n + " " + version) + ";\n");
  }
  fs.writeFileSync("dist/server/entry.mjs", ` + "`" + `import http from "node:http";
import fs from "node:fs";
import { greeting } from "greeting";
const version = ${JSON.stringify(version)};
const mode = ${JSON.stringify(mode)};
const client = new URL("../client/", import.meta.url);
const port = parseInt(process.env.PORT || "4321", 10);
http.createServer(async (req, res) => {
  try {
    const path = req.url.split("?")[0];
    if (/^\\/[A-Za-z0-9._\\/-]+$/.test(path) && !path.includes("..")) {
      const file = new URL("." + path, client);
      if (fs.existsSync(file) && fs.statSync(file).isFile()) {
        res.writeHead(200, { "content-type": "application/octet-stream" });
        res.end(fs.readFileSync(file));
        return;
      }
    }
    if (mode === "hang" && !req.url.startsWith("/files/")) {
      return; // no answer, ever
    }
    if (mode === "maint" && !req.url.startsWith("/files/")) {
      if (path === "/maint") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("maintenance\\n");
      } else {
        res.writeHead(302, { location: "/maint?from=" + encodeURIComponent(path) });
        res.end();
      }
      return;
    }
    const page = /^\\/p\\/([1-5])$/.exec(req.url);
    if (page) {
      const mod = await import("./pages/page-" + page[1] + ".mjs");
      res.writeHead(200, { "content-type": "text/plain", "x-greeting": greeting });
      res.end(mod.body + "\\n");
      return;
    }
    if (req.url.startsWith("/files/")) {
      const name = req.url.slice("/files/".length);
      if (!/^[a-z0-9.-]+$/.test(name)) throw new Error("bad name");
      const data = fs.readFileSync(new URL(name, client));
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(data);
      return;
    }
    res.writeHead(200, { "content-type": "text/plain", "x-greeting": greeting });
    res.end("frontend " + version + "\\n");
  } catch (e) {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(String(e) + "\\n");
  }
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

// greetingFiles is the frontend's one dependency, a package kept outside
// the frontend tree (as the npm registry would be) and installed by pnpm
// from its directory: a module and a payload of 4 MiB, so that
// node_modules/ outweighs the sources and dist/ as it does on a real site.
func greetingFiles() map[string]string {
	line := "concierge keeps node_modules in every release, hard linked.\n" // 61 bytes
	return map[string]string{
		"package.json": "{\n  \"name\": \"greeting\",\n  \"version\": \"1.0.0\",\n  \"type\": \"module\",\n  \"main\": \"index.js\"\n}\n",
		"index.js":     "export const greeting = \"hello\";\n",
		"payload.txt":  strings.Repeat(line, (4<<20)/len(line)),
	}
}
