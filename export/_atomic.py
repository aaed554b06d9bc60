"""Write beside the target, then rename into place: a failed export leaves nothing behind.

A rename within one directory is atomic, so TF Serving (which polls the model directory) or a
user never sees a half-written version directory or ONNX file. The exporters use the
package's one atomic writer, which also removes what a killed export left behind.
"""

from pnen_tf._atomic import staged_dir, staged_file

__all__ = ["staged_dir", "staged_file"]
