from otel_topics.cli import main

if __name__ == "__main__":  # guarded: worker processes (spawn) import this module without running it
    raise SystemExit(main())
