from api.limits import body_limit


def test_small_bodies_everywhere_but_where_an_image_may_travel() -> None:
    limits = {"max_request_bytes": 64 * 1024, "max_upload_bytes": 3 * 2**20}
    assert body_limit("/animations/abc/cancel", **limits) == 64 * 1024
    assert body_limit("/uploads", **limits) == 3 * 2**20 + 64 * 1024
    assert body_limit("/animations", **limits) == 4 * 2**20 + 64 * 1024  # base64 is 4/3 of the image
