// An HTTPS/1.1 server on Node's https module (OpenSSL linked into the node executable), for
// the end-to-end tests. Usage: node https_server.js PORT CERT KEY. Prints "ready PORT".
// Routes: /slow answers after a 20 ms setTimeout, /status/<code>, POST /echo (201, the body's
// size), anything else 200 "hello".
"use strict";

const fs = require("fs");
const https = require("https");

const [port, certPath, keyPath] = process.argv.slice(2);

function send(res, code, body) {
  res.writeHead(code, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

const server = https.createServer(
  { cert: fs.readFileSync(certPath), key: fs.readFileSync(keyPath) },
  (req, res) => {
    const path = req.url.split("?")[0];
    if (req.method === "POST") {
      let size = 0;
      req.on("data", (chunk) => (size += chunk.length));
      req.on("end", () => send(res, 201, String(size)));
    } else if (path === "/slow") {
      // libuv's timers may fire up to a millisecond early (the loop's cached clock): wait
      // out whatever of the 20 ms remains, so the handler really takes at least 20 ms
      const started = process.hrtime.bigint();
      const finish = () => {
        if (process.hrtime.bigint() - started < 20000000n) return setImmediate(finish);
        send(res, 200, "slow");
      };
      setTimeout(finish, 20);
    } else if (path.startsWith("/status/")) {
      send(res, Number(path.split("/")[2]), "status");
    } else {
      send(res, 200, "hello");
    }
  },
);

server.listen(Number(port), "127.0.0.1", () => {
  console.log(`ready ${server.address().port}`);
});
