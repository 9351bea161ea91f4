"""Procedurally drawn faces for the synthetic demo dataset (see audience.data.demo).

Age cues are ordinal: every cue is a smooth function of a continuous age position t (the class
index plus a personal offset), so neighbouring age classes look alike and far ones do not.
Gender shows in hair length, beard, lips, brows, jaw and shoulders, with some exceptions.
"""

from __future__ import annotations

import cv2
import numpy as np

SKIN_TONES = np.array([(255, 224, 196), (241, 194, 161), (224, 172, 135), (198, 134, 99), (160, 104, 72),
                       (115, 73, 48)], dtype=float)
HAIR_COLOURS = np.array([(30, 25, 22), (70, 45, 30), (110, 75, 45), (205, 170, 110), (150, 70, 35),
                         (150, 110, 70)], dtype=float)
GREY_HAIR = np.array((222, 222, 226), dtype=float)
EYE_COLOURS = np.array([(70, 45, 25), (40, 30, 20), (70, 110, 160), (80, 120, 80)], dtype=float)


def _by_age(t: float, *knots: float) -> float:
    """A cue's value at continuous age position t, interpolated between its values at the 8 classes."""
    return float(np.interp(t, np.arange(len(knots)), knots))


def _colour(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _mix(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    return a * (1 - weight) + b * weight


def make_look(rng: np.random.Generator, age_class: int, gender: str) -> dict:
    """Everything about a person's appearance that stays the same across their photos."""
    t = float(np.clip(age_class + rng.uniform(-0.35, 0.35), 0, 7.2))
    female = gender == "f"
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.1)
    grey = float(np.clip(_by_age(t, 0, 0, 0, 0, 0.03, 0.33, 0.68, 0.95) + rng.uniform(-0.1, 0.1), 0, 1))
    long_hair = (rng.random() < 0.93) == female and t >= 0.8
    adult_male = not female and t >= 3.6
    return {
        "t": t, "female": female,
        "skin": np.clip(SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 6, 3), 0, 255),
        "hair": _mix(hair, GREY_HAIR, grey), "eye": EYE_COLOURS[rng.integers(len(EYE_COLOURS))],
        "width": rng.uniform(0.92, 1.08),
        "ratio": _by_age(t, 1.0, 1.08, 1.15, 1.21, 1.25, 1.26, 1.27, 1.27) * rng.uniform(0.97, 1.03),
        "coverage": _by_age(t, 0.25, 0.95, 1, 1, 1, 1, 1, 1) * rng.uniform(0.8, 1.0),
        "hairline": 0.5 if female and rng.random() < 0.4 else rng.uniform(0.58, 0.68),
        "bald": adult_male and t > 5.2 and rng.random() < 0.35,
        "long_hair": long_hair, "hair_len": rng.uniform(1.15, 1.8),
        "beard": (rng.choice(["none", "stubble", "moustache", "full"], p=[0.3, 0.3, 0.15, 0.25])
                  if adult_male else ("stubble" if not female and t >= 3 and rng.random() < 0.35 else "none")),
        "lipstick": female and t >= 2.5 and rng.random() < 0.9,
        "earrings": female and t >= 1.5 and rng.random() < 0.45,
        "glasses": rng.random() < 0.06 * t and t >= 1.5,  # rising with age; never on babies
        "bow": female and t < 1.5 and rng.random() < 0.6,
        "clothes": rng.uniform(30, 230, 3),
        "volume": rng.uniform(1.1, 1.16) if female else rng.uniform(1.03, 1.08),
    }


class _Face:
    """One photo being drawn: the canvas, the head's geometry and the drawing helpers.

    The stages below draw in a fixed order and draw from `rng` in a fixed order: a given seed
    gives the same bytes (the demo set is reproducible).
    """

    def __init__(self, look: dict, rng: np.random.Generator, size: int):
        self.look, self.rng, self.size = look, rng, size
        c = self.c = size * 2  # drawn at twice the size and shrunk, for smooth edges
        self.u, self.t = c / 256, look["t"]
        top, bottom = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
        img = cv2.resize(np.stack([top, bottom])[:, None, :].astype(np.float32), (c, c),
                         interpolation=cv2.INTER_LINEAR)
        self.img = img.astype(np.uint8)
        self.fw = 54 * self.u * look["width"]
        self.fh = self.fw * look["ratio"]
        self.cx, self.cy = c / 2, c * 0.46
        self.skin, self.hair = look["skin"], look["hair"]
        self.dark_skin = self.skin * 0.55  # wrinkles and creases
        self.yaw = rng.uniform(-1, 1)
        self.fx = self.cx + self.yaw * self.fw * 0.14  # features shift sideways when the head turns

    @staticmethod
    def p(x: float, y: float) -> tuple[int, int]:
        return int(round(x)), int(round(y))

    def ell(self, x, y, ax, ay, colour, start=0, end=360, thick=-1, target=None):
        cv2.ellipse(self.img if target is None else target, self.p(x, y), self.p(max(ax, 1), max(ay, 1)), 0, start,
                    end, _colour(colour), thick if thick < 0 else max(1, int(round(thick))), cv2.LINE_AA)

    def blend_ell(self, x, y, ax, ay, colour, alpha, y_from=0.0):
        """Tint an elliptic patch (below row y_from) towards colour; done on its box only, for speed."""
        x0, y0 = max(0, int(x - ax) - 1), max(0, int(max(y - ay, y_from)) - 1)
        x1, y1 = min(self.c, int(x + ax) + 2), min(self.c, int(y + ay) + 2)
        if alpha <= 0 or x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        self.ell(x - x0, y - y0, ax, ay, (255,), target=mask)
        patch = self.img[y0:y1, x0:x1]
        inside = mask > 0
        patch[inside] = _mix(patch[inside], np.asarray(colour, dtype=float), alpha)

    def body(self) -> None:
        """Shoulders, long hair behind them, the neck."""
        look, t, img, p, ell = self.look, self.t, self.img, self.p, self.ell
        cx, cy, fw, fh, skin, hair = self.cx, self.cy, self.fw, self.fh, self.skin, self.hair
        # Children's heads are large against their shoulders; men's shoulders are the widest.
        shoulder = fw * _by_age(t, 1.2, 1.45, 1.65, 1.85, 2.0, 2.0, 2.0, 1.95) * (0.92 if look["female"] else 1.05)
        ell(cx, cy + fh * 1.75, shoulder, fh * 0.95, look["clothes"])
        if look["long_hair"]:
            ell(cx, cy + fh * 0.2, fw * 1.28, fh * 1.25, hair)
            cv2.rectangle(img, p(cx - fw * 1.28, cy), p(cx + fw * 1.28, cy + fh * look["hair_len"]), _colour(hair), -1)
        neck = fw * (0.5 if look["female"] or t < 2 else 0.62)
        cv2.rectangle(img, p(cx - neck, cy + fh * 0.5), p(cx + neck, cy + fh * 1.3), _colour(skin * 0.9), -1)

    def head(self) -> None:
        """Ears (and earrings), face and jaw, the hair on top, a bow, a beard; sets the eye line."""
        look, t, img, u, ell = self.look, self.t, self.img, self.u, self.ell
        cx, cy, fw, fh, skin, hair = self.cx, self.cy, self.fw, self.fh, self.skin, self.hair
        eye_y = self.eye_y = cy + fh * _by_age(t, 0.2, 0.13, 0.07, 0.02, -0.03, -0.03, -0.02, -0.01)
        for side in (-1, 1):
            ell(cx + side * fw * 0.98, eye_y + fh * 0.12, fw * 0.16, fh * 0.22, skin * 0.95)
            if look["earrings"]:
                ell(cx + side * fw * 1.0, eye_y + fh * 0.36, 3 * u, 3 * u, (235, 200, 60))
        jaw = (cx, cy + fh * 0.3, fw * (0.88 if look["female"] else 0.95), fh * 0.7)  # men's chins are squarer
        ell(cx, cy, fw, fh, skin)
        ell(*jaw, skin)
        # Hair: the head outline above the temples, minus the face below the hairline (a bald dome
        # reaches above it); babies have only a light fuzz.
        above = img[: int(eye_y + fh * 0.05)]
        hairline = 1.15 if look["bald"] else look["hairline"]
        ell(cx, cy - fh * 0.12, fw * look["volume"], fh * 1.04, _mix(skin, hair, look["coverage"]), target=above)
        ell(cx, cy + fh * 0.3, fw * 0.94, fh * (0.3 + hairline), skin, 180, 360, target=above)
        if look["bow"]:
            for side in (-1, 1):
                ell(cx + fw * 0.45 + side * 7 * u, cy - fh * 0.85, 7 * u, 5 * u, (230, 80, 150))
        if look["beard"] != "none":
            self.blend_ell(*jaw, hair * 0.8, {"stubble": 0.45, "moustache": 0.0, "full": 0.92}[look["beard"]],
                           cy + fh * 0.22)

    def eyes(self) -> None:
        """Eyes, brows, bags and crow's feet, glasses, forehead lines."""
        look, t, u, ell, eye_y = self.look, self.t, self.u, self.ell, self.eye_y
        fx, fw, fh = self.fx, self.fw, self.fh
        # Eyes: big, round and low in a baby's face; smaller and higher in an adult's.
        eye_r = self.eye_r = fw * _by_age(t, 0.16, 0.145, 0.13, 0.115, 0.105, 0.1, 0.095, 0.09)
        open_ = self.rng.uniform(0.75, 1.0) * _by_age(t, 1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65)
        for side in (-1, 1):
            self.eye(fx + side * fw * 0.4, side, open_)
        if look["glasses"]:
            bridge = fw * 0.4 - eye_r * 2
            cv2.line(self.img, self.p(fx - bridge, eye_y), self.p(fx + bridge, eye_y), (30, 30, 30), int(2 * u))
        for k in range(int(np.clip((t - 4.4) * 1.5, 0, 4))):  # forehead lines
            ell(fx, eye_y - eye_r * 3.2 - k * 5 * u, fw * 0.45, fh * 0.07, self.dark_skin, 200, 340, 1.6 * u)

    def eye(self, ex: float, side: int, open_: float) -> None:
        """One eye at x = ex with its brow, its age lines and its half of the glasses."""
        look, t, u, img, p, ell = self.look, self.t, self.u, self.img, self.p, self.ell
        eye_y, eye_r, dark_skin, yaw = self.eye_y, self.eye_r, self.dark_skin, self.yaw
        brow_colour = _mix(self.skin, self.hair * 0.8, min(1.0, look["coverage"] + 0.2))
        brow_thick = (4.5 if not look["female"] else 2.5) * u * (0.5 if t < 1 else 1)
        ell(ex, eye_y, eye_r * 1.45, eye_r * open_, (245, 245, 240))
        ell(ex + yaw * eye_r * 0.3, eye_y, eye_r * 0.8, eye_r * 0.8 * open_, look["eye"])
        ell(ex + yaw * eye_r * 0.3, eye_y, eye_r * 0.35, eye_r * 0.35 * open_, (15, 15, 15))
        ell(ex, eye_y, eye_r * 1.45, eye_r * open_, dark_skin * 0.8, 180, 360, 1.8 * u)
        by = eye_y - eye_r * 1.9
        brow = np.array([p(ex - side * eye_r * 1.4, by + 2 * u), p(ex, by - 2 * u), p(ex + side * eye_r * 1.6, by + u)])
        cv2.polylines(img, [brow], False, _colour(brow_colour), max(1, int(brow_thick)), cv2.LINE_AA)
        if t > 4.6:  # bags under the eyes, then crow's feet
            ell(ex, eye_y + eye_r * 0.9, eye_r * 1.2, eye_r * 0.6, dark_skin, 20, 160, 1.5 * u)
        for k in range(int(np.clip((t - 4.7) * 1.6, 0, 3))):
            ox = ex + side * eye_r * 1.6
            cv2.line(img, p(ox, eye_y + (k - 1) * 3 * u), p(ox + side * 6 * u, eye_y + (k - 1) * 5 * u),
                     _colour(dark_skin), max(1, int(1.5 * u)), cv2.LINE_AA)
        if look["glasses"]:
            ell(ex, eye_y, eye_r * 2.0, eye_r * 1.6, (30, 30, 30), thick=2 * u)

    def nose_and_mouth(self) -> None:
        """Nose, nasolabial lines, moustache, lips and smile, blush."""
        look, t, u, img, p, ell = self.look, self.t, self.u, self.img, self.p, self.ell
        fx, fw, fh, skin, eye_y, eye_r, dark_skin = self.fx, self.fw, self.fh, self.skin, self.eye_y, self.eye_r, \
            self.dark_skin
        nose_len = fh * _by_age(t, 0.12, 0.17, 0.22, 0.26, 0.28, 0.29, 0.3, 0.31)
        nose_x, nose_y = fx + self.yaw * fw * 0.06, eye_y + nose_len + eye_r * 0.5
        cv2.line(img, p(nose_x, eye_y + eye_r), p(nose_x + 3 * u, nose_y), _colour(skin * 0.8),
                 max(1, int(2 * u)), cv2.LINE_AA)
        for side in (-1, 1):
            ell(nose_x + side * fw * 0.09, nose_y, fw * 0.05, fh * 0.025, dark_skin)
        mouth_y = nose_y + fh * _by_age(t, 0.2, 0.22, 0.24, 0.26, 0.27, 0.27, 0.27, 0.26)
        mouth_w = fw * _by_age(t, 0.24, 0.3, 0.34, 0.38, 0.4, 0.4, 0.4, 0.4)
        if t > 5.0:  # lines from the nose to the mouth corners
            for side in (-1, 1):
                ell(nose_x + side * fw * 0.12, mouth_y, fw * 0.22, (mouth_y - nose_y) * 1.1, dark_skin,
                    -90 if side > 0 else 180, 0 if side > 0 else 270, 1.6 * u)
        if look["beard"] in ("moustache", "full"):
            ell(fx, mouth_y - fh * 0.07, mouth_w * 1.1, fh * 0.06, self.hair * 0.8)
        lip = np.array((200, 40, 60)) if look["lipstick"] else skin * np.array((0.85, 0.6, 0.6))
        ell(fx, mouth_y, mouth_w, fh * (0.06 if look["female"] else 0.04), lip)
        smile = self.rng.uniform(-0.2, 1.0) * fh * 0.06
        curve = np.array([p(fx - mouth_w, mouth_y - smile), p(fx, mouth_y + smile * 0.6),
                          p(fx + mouth_w, mouth_y - smile)])
        cv2.polylines(img, [curve], False, _colour(lip * 0.55), max(1, int(1.5 * u)), cv2.LINE_AA)
        blush = _by_age(t, 0.35, 0.25, 0.12, 0.05, 0, 0, 0, 0) + (0.12 if look["female"] else 0)
        for side in (-1, 1):
            self.blend_ell(fx + side * fw * 0.55, mouth_y - fh * 0.15, fw * 0.18, fh * 0.1, (235, 110, 120), blush)

    def photo(self) -> tuple[np.ndarray, float]:
        """Pose, then light: a small turn, zoom and shift, a light gradient, sensor noise; (image, roll angle)."""
        rng, c, size = self.rng, self.c, self.size
        angle, scale = float(np.clip(rng.normal(0, 6), -15, 15)), rng.uniform(0.9, 1.1)
        matrix = cv2.getRotationMatrix2D((self.cx, self.cy), angle, scale)
        matrix[:, 2] += rng.uniform(-8, 8, 2) * self.u
        img = cv2.warpAffine(self.img, matrix, (c, c), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        ramp = np.linspace(-0.5, 0.5, size)
        gain = rng.uniform(0.8, 1.2) + rng.uniform(-0.3, 0.3) * ramp[None, :] + rng.uniform(-0.2, 0.2) * ramp[:, None]
        noise = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2, 7)
        img = img * (gain[..., None] * rng.uniform(0.92, 1.08, 3)).astype(np.float32) + noise
        if rng.random() < 0.25:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        return np.clip(img, 0, 255).astype(np.uint8), angle


def draw_face(look: dict, rng: np.random.Generator, size: int) -> tuple[np.ndarray, float, float]:
    """One photo of a person: an RGB uint8 array of size x size, its roll angle (degrees) and yaw (-1..1).

    Pose, light, expression and background come from rng; the person comes from `look`.
    """
    face = _Face(look, rng, size)
    face.body()
    face.head()
    face.eyes()
    face.nose_and_mouth()
    image, angle = face.photo()
    return image, angle, face.yaw
