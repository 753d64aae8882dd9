"""serve: the search service over a reference bundle, an HTTP API and a page (not a DVC stage).

Reads   the bundle folder ``--bundle`` (built by the bundle stage; checked when opened)
Serves  on ``--host`` (default 127.0.0.1: this machine only) and ``--port`` (default 8000):
        ``GET /`` the search page; ``POST /search`` (multipart ``image``, optional ``k``);
        ``POST /references`` (multipart ``image`` + ``id``), ``DELETE /references/{id}``: change
        the bundle on disk; ``GET /references/{id}/thumbnail``; ``GET /health``
Refuses a request body over ``--max-upload-mb`` (default 20) with 413
Runs    at most ``--concurrent-searches`` searches at once (default 2: one's forwards use every
        core, the other's decoding and ranking run meanwhile)

    python -m stages.serve --bundle outputs/bundle [--host 127.0.0.1] [--port 8000] [--max-upload-mb 20]
                           [--concurrent-searches 2]
"""
from __future__ import annotations

from retrieval.cli import parser, stage
from retrieval.serve.app import CONCURRENT_SEARCHES, create_app


@stage
def main(argv=None) -> int:
    ap = parser(__doc__, params=False)
    ap.add_argument("--bundle", required=True, help="the bundle folder")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body accepted, MB")
    ap.add_argument("--concurrent-searches", type=int, default=CONCURRENT_SEARCHES,
                    help="searches run at once; the others wait their turn")
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        ap.error(f"--port must be 0..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        ap.error(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.concurrent_searches < 1:
        ap.error(f"--concurrent-searches must be >= 1, got {args.concurrent_searches}")
    import uvicorn
    app = create_app(args.bundle, int(args.max_upload_mb * 2**20), args.concurrent_searches)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
