from infill_ls.cli import main

main()
