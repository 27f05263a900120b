"""The process of a temporary Prefect server (``flows.server.TemporaryServer``): ``python -m
flows.server_process PORT``. It imports Prefect's server and builds its app, then reads one line:
``serve`` opens the database and listens on PORT; anything else, or the end of input (the command
exited), ends it having touched nothing."""

import sys


def main() -> None:
    port = int(sys.argv[1])
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app()  # the slow part (3 s here), while the command plans; the database waits for lifespan
    if sys.stdin.readline().strip() != "serve":
        return
    # What Prefect's temporary server subprocess runs (exit code 3 when the port is taken).
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")


if __name__ == "__main__":
    main()
