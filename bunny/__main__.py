from bunny.cli import main

main()
