"""Names of the exported signatures and their tensors, shared by the exporters and the client.

The bytes tensors end in `_bytes` because TF Serving's REST API base64-encodes exactly the
string outputs so named (`{"b64": ...}`); an undecodable raw PNG would otherwise break the JSON.
"""

SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "restore_image"
IMAGES = "images"
RESTORED = "restored"
IMAGE_BYTES = "image_bytes"
PNG_BYTES = "png_bytes"
