package sandbox

import (
	"fmt"
	"strings"
)

// backendFiles is a stand-in for tractstack-go: one module with
// cmd/tractstack-go that serves GET /api/v1/health and reports its version,
// and the templates directory the whitelist script reads. Like the real
// backend it serves a server-sent-event stream (/api/v1/auth/sse) that
// never ends by itself, and on SIGTERM closes its listener at once, waits
// up to 30 s for open requests, then closes its "tenant manager" and exits.
func backendFiles(version string, healthy bool) map[string]string {
	return map[string]string{
		"go.mod": "module tractstack-go\n\ngo 1.22\n",
		"cmd/tractstack-go/main.go": `package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
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
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
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
// node_modules/ does not start.
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
console.log("building frontend " + version);
// As Astro does: the output directory is emptied when the build starts.
fs.rmSync("dist", { recursive: true, force: true });
setTimeout(() => {
  if (fs.existsSync("src/broken")) {
    console.error("build failed: src/broken exists");
    process.exit(1);
  }
  fs.mkdirSync("dist/server/pages", { recursive: true });
  fs.mkdirSync("dist/client", { recursive: true });
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
const client = new URL("../client/", import.meta.url);
const port = parseInt(process.env.PORT || "4321", 10);
http.createServer(async (req, res) => {
  try {
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
