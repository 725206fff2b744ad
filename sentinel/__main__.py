from sentinel.cli.main import main

main()
