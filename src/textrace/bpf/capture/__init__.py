"""The in-kernel capture program: its restricted-C source, build and libbpf loading."""
