"""HTTP front end: validates requests, stores jobs, hands them to the render queue."""
