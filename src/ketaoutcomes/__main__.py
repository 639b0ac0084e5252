"""python -m ketaoutcomes ... (see ketaoutcomes.cli)."""

from ketaoutcomes.cli import main

if __name__ == "__main__":
    main()
