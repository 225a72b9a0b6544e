"""``trtinfer serve``: the Open Inference Protocol over HTTP (and gRPC), an image endpoint, a web page
and Prometheus metrics, on ``trtinfer.load`` and its dynamic batcher. Needs the ``serve`` extra
(Starlette, uvicorn, prometheus_client, python-multipart; tritonclient[grpc] for gRPC)."""
