from agex.cli import main

main()
