from hangar.cli import main

main()
