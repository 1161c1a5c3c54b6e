from otel_topics.cli import main

raise SystemExit(main())
