"""The embedded default dataset: labelled synthetic AU videos of a real face photo, written in any supported layout.

There is no public AU dataset that can be fetched here, so ``synthesize`` renders one: the astronaut portrait that
scikit-image ships (a public-domain NASA photo), its landmarks found once with MediaPipe FaceMesh, and Action Units
drawn as local, graded deformations of the face (smooth displacement fields applied with ``cv2.remap``, plus
wrinkle and shadow shading) around the landmarks each AU moves. Every synthetic subject gets its own face shape,
skin and hair tone and background; every frame its own in-plane head pose, lighting and sensor noise. Labels come
from AU episodes (onset, apex, offset) with per-AU base rates from rare to common, AU06 riding on AU12, and a few
unknown stretches. The result is a test fixture and a demo, never a substitute for real data.

Each part reads on its own:

- ``face``: the photo, its 478 FaceMesh landmarks (``astronaut_landmarks``), the person's mask, the mesh indices;
- ``aus``: the Action Units (``AU_SPECS``: what each moves and shades, its base rate) and the shading painters;
- ``render``: identity, pose, lighting, ``FaceRenderer`` / ``render_frame`` (one frame from AU intensities), the
  per-video pose and lighting tracks and noise;
- ``episodes``: labels without rendering (``generate_labels``, ``Labels``);
- ``layouts``: the four layouts (``LAYOUTS``), their label files and the atomic file, video and image writers;
- ``dataset``: ``SynthConfig``, ``synthesize``, ``render_video`` (one video's frames for its labels).

Everything public is importable from this package, as it was from the single module it replaces.
"""

from __future__ import annotations

from aubench_cli.data.synth.face import (  # noqa: F401
    PATCH_X0,
    PATCH_Y0,
    PATCH_SIZE,
    astronaut_photo,
    astronaut_landmarks,
    astronaut_mask,
    FACE_OVAL,
    BROW_INNER_L,
    BROW_INNER_R,
    BROW_OUTER_L,
    BROW_OUTER_R,
    BROW_MID_L,
    BROW_MID_R,
    LID_UPPER_L,
    LID_UPPER_R,
    LID_LOWER_L,
    LID_LOWER_R,
    CHEEK_L,
    CHEEK_R,
    CHEEK_LOW_L,
    CHEEK_LOW_R,
    ALA_L,
    ALA_R,
    CORNER_L,
    CORNER_R,
    UPPER_LIP_OUTER,
    LOWER_LIP_OUTER,
    UPPER_LIP_INNER,
    LOWER_LIP_INNER,
    UPPER_LIP_CENTRE,
    UPPER_LIP_INNER_CENTRE,
    LOWER_LIP_CENTRE,
    LOWER_LIP_INNER_CENTRE,
    CHIN,
)
from aubench_cli.data.synth.aus import (  # noqa: F401
    Move,
    AUSpec,
    AU_SPECS,
    PAPER_AUS,
)
from aubench_cli.data.synth.episodes import (  # noqa: F401
    PRESENT_AT,
    APEX_LEVELS,
    APEX_PROBS,
    Episode,
    Labels,
    generate_labels,
)
from aubench_cli.data.synth.render import (  # noqa: F401
    Identity,
    Pose,
    Lighting,
    STRENGTH_GAMMA,
    FACE_HEIGHT_FRACTION,
    FaceRenderer,
    make_background,
    render_frame,
    MAX_ANGLE,
    MOTIONS,
    pose_track,
    lighting_track,
    NOISE_SIGMA,
)
from aubench_cli.data.synth.layouts import (  # noqa: F401
    Layout,
    LAYOUTS,
    FOURCC,
    VideoItem,
)
from aubench_cli.data.synth.dataset import (  # noqa: F401
    Progress,
    SynthConfig,
    parse_size,
    subject_identity,
    subject_labels,
    render_video,
    video_conditions,
    VideoConditions,
    synthesize,
)

__all__ = [
    'ALA_L',
    'ALA_R',
    'APEX_LEVELS',
    'APEX_PROBS',
    'AUSpec',
    'AU_SPECS',
    'BROW_INNER_L',
    'BROW_INNER_R',
    'BROW_MID_L',
    'BROW_MID_R',
    'BROW_OUTER_L',
    'BROW_OUTER_R',
    'CHEEK_L',
    'CHEEK_LOW_L',
    'CHEEK_LOW_R',
    'CHEEK_R',
    'CHIN',
    'CORNER_L',
    'CORNER_R',
    'Episode',
    'FACE_HEIGHT_FRACTION',
    'FACE_OVAL',
    'FOURCC',
    'FaceRenderer',
    'Identity',
    'LAYOUTS',
    'LID_LOWER_L',
    'LID_LOWER_R',
    'LID_UPPER_L',
    'LID_UPPER_R',
    'LOWER_LIP_CENTRE',
    'LOWER_LIP_INNER',
    'LOWER_LIP_INNER_CENTRE',
    'LOWER_LIP_OUTER',
    'Labels',
    'Layout',
    'Lighting',
    'MAX_ANGLE',
    'MOTIONS',
    'Move',
    'NOISE_SIGMA',
    'PAPER_AUS',
    'PATCH_SIZE',
    'PATCH_X0',
    'PATCH_Y0',
    'PRESENT_AT',
    'Pose',
    'Progress',
    'STRENGTH_GAMMA',
    'SynthConfig',
    'UPPER_LIP_CENTRE',
    'UPPER_LIP_INNER',
    'UPPER_LIP_INNER_CENTRE',
    'UPPER_LIP_OUTER',
    'VideoItem',
    'astronaut_landmarks',
    'astronaut_mask',
    'astronaut_photo',
    'generate_labels',
    'lighting_track',
    'make_background',
    'parse_size',
    'pose_track',
    'render_frame',
    'VideoConditions',
    'render_video',
    'video_conditions',
    'subject_identity',
    'subject_labels',
    'synthesize',
]
