"""An HTTPS client that loads the TLS library late, for the end-to-end tests.

late HOST PORT PATH N: prints "waiting" and blocks on a stdin line before it imports ssl (so
libssl is mapped only then), prints "imported", blocks on another stdin line, then makes N
requests on one HTTPS connection and prints "done STATUS...". Nothing here maps libssl before
the first line: only sys is imported at start-up.
"""

import sys


def main() -> None:
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    print("waiting", flush=True)
    sys.stdin.readline()
    import http.client
    import ssl

    print("imported", flush=True)
    sys.stdin.readline()
    conn = http.client.HTTPSConnection(host, port, context=ssl._create_unverified_context())
    statuses = []
    for _ in range(n):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        statuses.append(str(response.status))
    conn.close()
    print("done " + " ".join(statuses), flush=True)


main()
