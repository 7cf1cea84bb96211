//! The canonical retail model and the mapping engine (in progress).
