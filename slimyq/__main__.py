from slimyq.cli import main

main()
