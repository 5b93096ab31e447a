from syncd.launch import main

main()
