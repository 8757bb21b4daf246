"""python -m deploy.serve: run the service (same flags as `rednet-deploy serve`)."""
import sys

from deploy.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
