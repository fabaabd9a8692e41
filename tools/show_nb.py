"""Print the text outputs of an executed notebook (a quick look without building the book)."""
import sys

import nbformat

nb = nbformat.read(sys.argv[1], 4)
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
for i, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
        continue
    print(f"----- cell {i}")
    for out in cell.outputs:
        if out.output_type == "stream":
            print(out.text[:limit])
        elif out.output_type == "error":
            print("ERROR", out.ename, out.evalue)
        elif "data" in out:
            data = out["data"]
            print("[image]" if "image/png" in data else data.get("text/plain", "")[:limit])
