#!/usr/bin/env python3
"""Reference F16/BF16 conversion of a F32 GGUF with llama.cpp's own gguf-py + numpy, the way
convert_hf_to_gguf.py does it: 2-D+ tensors cast to float16 (numpy, round to nearest even) or
bfloat16 (gguf-py's LazyNumpy-free quant helper), 1-D tensors stay F32, metadata copied.
usage: gguf-f16-reference.py IN.gguf OUT.gguf f16|bf16   (needs numpy; gguf-py from /work/llama.cpp)"""
import sys
sys.path.insert(0, '/work/llama.cpp/gguf-py')
import numpy as np
import gguf
from gguf.constants import GGUFValueType

src, dst, kind = sys.argv[1], sys.argv[2], sys.argv[3]
r = gguf.GGUFReader(src)
arch = r.fields['general.architecture'].contents()
w = gguf.GGUFWriter(dst, arch)
for name, f in r.fields.items():
    if name.startswith('GGUF.') or name == 'general.architecture':
        continue
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        w.add_array(name, f.contents())
        # keep the item type of numeric arrays
        w.kv_data[0][name] = gguf.GGUFValue(f.contents(), GGUFValueType.ARRAY, f.types[-1])
    else:
        w.add_key_value(name, f.contents(), t)
for t in r.tensors:
    data = np.array(t.data, dtype=np.float32).reshape(list(reversed([int(x) for x in t.shape])))
    if data.ndim >= 2:
        if kind == 'f16':
            w.add_tensor(t.name, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
            w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
    else:
        w.add_tensor(t.name, data)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
